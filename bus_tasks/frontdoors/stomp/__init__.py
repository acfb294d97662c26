"""The STOMP 1.2 front door (VDSM's dialect): frames, sessions, the server, its runner."""
