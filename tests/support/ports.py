"""Loopback ports for the tests' own servers, and for connections that must be refused."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nothing listens on: the probe that found it is closed again on return."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
