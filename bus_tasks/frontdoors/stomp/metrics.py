"""The STOMP front door's own metrics: how close it is to its limits (docs/metrics.md).

Read at scrape time from the plain numbers the door keeps (a collector, not prometheus objects on
the frame path); ``bus-tasks stomp --metrics HOST:PORT`` serves them on a /metrics of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus_tasks.frontdoors.stomp.server import StompFrontDoor

REFUSALS = ("connections", "connect_timeout", "heartbeat", "outbuf", "tls_handshake")
"""Why a connection was closed for a limit: one over ``max_connections``, no CONNECT (or TLS
handshake) within ``connect_timeout_s``, silent past twice its heart-beat, more than
``max_outbuf_bytes`` left unread, a TLS handshake that failed."""


class StompDoorMetrics(Collector):
    """``bus_tasks_stomp_connections`` (and its limit), refusals, requests in flight and over."""

    def __init__(self, door: StompFrontDoor) -> None:
        self._door = door

    def collect(self) -> Iterator[Metric]:
        door = self._door
        yield GaugeMetricFamily(
            "bus_tasks_stomp_connections", "STOMP client connections open.", value=door.sessions
        )
        yield GaugeMetricFamily(
            "bus_tasks_stomp_connections_limit",
            "At most this many STOMP connections at once (stomp_max_connections).",
            value=door.limits.max_connections,
        )
        refused = CounterMetricFamily(
            "bus_tasks_stomp_refused",
            "STOMP connections closed for the front door's limits, by reason.",
            labels=["reason"],
        )
        for reason in REFUSALS:
            refused.add_metric([reason], door.refusals[reason])
        yield refused
        yield GaugeMetricFamily(
            "bus_tasks_stomp_requests_in_flight",
            "Requests forwarded by the STOMP front door still waiting for their reply.",
            value=door.pending,
        )
        yield CounterMetricFamily(
            "bus_tasks_stomp_requests_over_pending",
            "Requests answered at once (-32013) for being over stomp_max_pending on their connection.",
            value=door.over_pending,
        )
