"""Composition root of ``bus-tasks stomp``: one asyncio loop owning the broker connection, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from bus_tasks.config import Settings
from bus_tasks.frontdoors.stomp import StompFrontDoor, StompLimits
from bus_tasks.frontdoors.tls import server_context
from workers import systemd, wiring

log = logging.getLogger("bus_tasks.stomp")

DEFAULT_LISTEN = "127.0.0.1:54321"


@dataclass(frozen=True)
class StompOptions:
    """What the command line says beyond Settings."""

    host: str
    port: int
    timeout_s: float
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) as a pair."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def run_stomp(settings: Settings, options: StompOptions) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit status."""
    wiring.warn_if_identity_off(settings, log)
    stop = threading.Event()
    return asyncio.run(_main(settings, options, stop))


async def _main(settings: Settings, options: StompOptions, stop: threading.Event) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(signum: int) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        systemd.notify(systemd.STOPPING)
        stop.set()
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    tls = None
    if options.tls_cert and options.tls_key:
        tls = server_context(options.tls_cert, options.tls_key, options.tls_ca)
    limits = StompLimits(
        connect_timeout_s=settings.stomp_connect_timeout_s,
        max_connections=settings.stomp_max_connections,
        max_pending=settings.stomp_max_pending,
        max_outbuf_bytes=settings.stomp_max_outbuf_bytes,
    )
    door = StompFrontDoor(timeout_s=options.timeout_s, ssl_context=tls, limits=limits)
    bridge = wiring.stomp_bridge(settings, door.on_reply, stop=stop)
    start = loop.run_in_executor(None, bridge.start)  # connecting may take long: the loop stays free
    stopped = asyncio.ensure_future(stopping.wait())
    waiters: set[asyncio.Future[Any]] = {start, stopped}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if stopping.is_set():  # before the broker was reached: the connection's retries see ``stop``
        done, _ = await asyncio.wait({start}, timeout=10.0)
        if done:  # else the executor's thread still owns the connection; the process exits anyway
            start.exception()  # ShutdownRequested, or connected just then: closed either way
            bridge.close()
        return 0
    stopped.cancel()
    await start
    server = await door.start(bridge, options.host, options.port)
    host, port = server.sockets[0].getsockname()[:2]
    log.info("stomp front door listening on %s:%s", host, port)
    systemd.notify(systemd.READY)
    try:
        await stopping.wait()
    finally:
        server.close()
        await door.close_sessions()
        await server.wait_closed()
        bridge.close()
    return 0
