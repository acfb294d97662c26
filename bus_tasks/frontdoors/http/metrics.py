"""The HTTP front door's own metrics: how close it is to its limits (docs/metrics.md).

Read at scrape time from plain numbers the door keeps (a collector, not prometheus objects on the
request path); registered in the aggregator's registry, so ``/metrics`` shows them beside its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REFUSALS = ("watchers", "body")
"""Why a request was refused for the door's limits: ``max_watchers`` reached (503), a body over
``max_body_bytes`` (413)."""


class HttpDoorMetrics(Collector):
    """``bus_tasks_http_watchers`` (and its limit) and ``bus_tasks_http_refused_total``."""

    def __init__(self, watchers: Callable[[], int], max_watchers: int) -> None:
        self._watchers = watchers
        self._max_watchers = max_watchers
        self._refused: Counter[str] = Counter()

    def refused(self, reason: str) -> None:
        """One request refused for ``reason`` (one of :data:`REFUSALS`)."""
        self._refused[reason] += 1

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "bus_tasks_http_watchers", "/api/watch streams being served.", value=self._watchers()
        )
        yield GaugeMetricFamily(
            "bus_tasks_http_watchers_limit",
            "At most this many /api/watch streams at once (http_max_watchers).",
            value=self._max_watchers,
        )
        refused = CounterMetricFamily(
            "bus_tasks_http_refused",
            "Requests the HTTP front door refused for its limits, by reason.",
            labels=["reason"],
        )
        for reason in REFUSALS:
            refused.add_metric([reason], self._refused[reason])
        yield refused
