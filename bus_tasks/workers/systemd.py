"""systemd's readiness protocol (``Type=notify``): one datagram to ``$NOTIFY_SOCKET`` per state.

A few lines over a unix datagram socket instead of a dependency. Without ``NOTIFY_SOCKET`` (not
started by systemd) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger("bus_tasks.systemd")

READY = "READY=1"
STOPPING = "STOPPING=1"


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when there is no socket or it fails.

    A failure is logged, never raised: the service runs on whether or not systemd heard it.
    """
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # the abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot tell systemd %s: %s", state, exc)
        return False
    return True


def notify_when_ready(
    ready: threading.Event, stop: threading.Event, *, poll_s: float = 0.5
) -> threading.Thread:
    """A daemon thread that sends ``READY=1`` once ``ready`` is set (not once ``stop`` is first)."""

    def wait() -> None:
        while not stop.is_set():
            if ready.wait(poll_s):
                notify(READY)
                return

    thread = threading.Thread(target=wait, name="sd-notify", daemon=True)
    thread.start()
    return thread
