"""Composition root of ``bus-tasks stomp``: one asyncio loop owning the broker connection, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from bus_tasks.config import Settings
from bus_tasks.frontdoors.stomp.metrics import StompDoorMetrics
from bus_tasks.frontdoors.stomp.running import RunningFrontDoor
from bus_tasks.frontdoors.stomp.server import StompLimits
from bus_tasks.frontdoors.stomp.tls import server_context
from bus_tasks.workers import systemd, wiring
from bus_tasks.workers.options import parse_listen

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
    running = RunningFrontDoor(
        wiring.connect(settings, stop=stop),  # its retries end at the stop
        timeout_s=options.timeout_s,
        host=options.host,
        port=options.port,
        ssl_context=tls,
        limits=limits,
        trust=settings.trust,
        start_timeout_s=None,
    )
    metrics = _serve_metrics(settings.stomp_metrics, StompDoorMetrics(running.door))
    systemd.notify_when_ready(running.listening, stop)  # at its "listening" line
    try:
        await running.serve(stopping)
    finally:
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
    return 0


def _serve_metrics(listen: str, collector: StompDoorMetrics) -> WSGIServer | None:
    """prometheus_client's own /metrics server on a thread of its own, at ``listen`` ("" : none;
    no host: loopback). Reads are plain numbers the loop keeps, so no lock is needed."""
    if not listen:
        return None
    host, port = parse_listen(listen)
    if not listen.rpartition(":")[0]:
        host = "127.0.0.1"
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    server, _ = start_http_server(port, host, registry=registry)
    bound_host, bound_port = server.server_address[:2]
    log.info("stomp metrics on http://%s:%s/metrics", bound_host, bound_port)
    return server
