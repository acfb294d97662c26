"""What crosses the wire: JSON-RPC envelopes and the shapes VDSM's clients parse. No I/O."""
