"""Read an aggregator's Prometheus registry in tests, as a scrape of /metrics would."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bus_tasks.aggregator import Aggregator
from bus_tasks.testing import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(aggregator: Aggregator) -> Samples:
    text = generate_latest(aggregator.metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(aggregator: Aggregator, name: str, **labels: str) -> float | None:
    """One sample's value; None when the series does not exist (yet)."""
    return scrape(aggregator).get((name, frozenset(labels.items())))


def wait_metric(aggregator: Aggregator, name: str, want: float, *, timeout_s: float, **labels: str) -> None:
    wait_until(
        lambda: metric(aggregator, name, **labels) == want,
        timeout_s=timeout_s,
        interval_s=0.05,
        what=f"{name}{labels} == {want}",
    )
