"""Every series the dashboard and the alert rules read is one two real ``bus-tasks serve --http``
replicas export (the STOMP front door's: a real ``bus-tasks stomp --metrics``): each name on
``/metrics``, each label matched on that series, each value matched with ``=`` among its values
(a renamed metric or outcome fails here)."""

from __future__ import annotations

import os
import re
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.brokers import RABBITMQ, rabbitmqctl, require_service
from support.monitoring import expressions, recorded
from support.processes import BIN, Process
from support.promql import SYNTHETIC, selectors

from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

READY_S = 30.0
PROMETHEUS_LABELS = {"job", "instance"}  # added by the scrape, not by the service
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _serve(url: str, data_dir: Path, name: str) -> tuple[Process, str]:
    argv = [str(BIN / "bus-tasks"), "serve", "--broker", url]
    argv += ["--data-dir", str(data_dir), "--http", "127.0.0.1:0"]
    env = {**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", "BUS_TASKS_AGGREGATOR_NAME": name}
    process = Process(argv, env=env)
    base = process.wait_for_http(timeout_s=READY_S)
    process.wait_for_line("aggregator ready", timeout_s=READY_S)
    return process, base


def _stomp(url: str) -> tuple[Process, str]:
    argv = [
        str(BIN / "bus-tasks"),
        "stomp",
        "--broker",
        url,
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]
    process = Process(argv, env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO"})
    line = process.lines[process.wait_for_line("stomp metrics on http://", timeout_s=READY_S)]
    match = re.search(r"stomp metrics on (http://127\.0\.0\.1:\d+)/metrics$", line)
    assert match is not None, line
    return process, match.group(1)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[str]]:
    """Two aggregators on a vhost of this test, and a STOMP front door to them: the base URLs of
    the aggregators' HTTP front doors, then the STOMP door's metrics."""
    require_service("RabbitMQ", RABBITMQ)
    vhost = f"bus_tasks_monitoring_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    processes: list[Process] = []
    try:
        bases = []
        for name in ("agg-1", "agg-2"):
            process, base = _serve(url, tmp_path / name, name)
            processes.append(process)
            bases.append(base)
        process, base = _stomp(url)
        processes.append(process)
        yield [*bases, base]
    finally:
        for process in processes:
            process.kill()
        rabbitmqctl("delete_vhost", vhost)


def _scrape(base: str) -> dict[str, dict[str, set[str]]]:
    """Series name (samples' and families') -> label -> the values seen."""
    with _NO_PROXY.open(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    series: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        series.setdefault(family.name, defaultdict(set))  # a family with no sample yet is exported too
        for sample in family.samples:
            labels = series.setdefault(sample.name, defaultdict(set))
            for label, value in sample.labels.items():
                labels[label].add(value)
    return series


def test_every_series_the_dashboard_and_the_rules_read_is_exported(replicas: list[str]) -> None:
    # Each lists the other (and its lag) once it heard the other's heartbeat.
    wait_until(
        lambda: all(_scrape(base).get("bus_tasks_replica_lag") for base in replicas[:2]),
        timeout_s=READY_S,
        what="each replica's lag behind the other",
    )
    exported, stomp = _scrape(replicas[0]), _scrape(replicas[2])
    made = recorded()
    problems = []
    checked = 0
    for where, expr in expressions().items():
        for selector in selectors(expr):
            if selector.name in made or selector.name in SYNTHETIC:
                continue
            checked += 1
            source = stomp if selector.name.startswith("bus_tasks_stomp_") else exported
            if selector.name not in source:
                problems.append(f"{where}: {selector.name} is not exported")
                continue
            labels = source[selector.name]
            for label, op, value in selector.matchers:
                if label in PROMETHEUS_LABELS:
                    continue
                if label not in labels:
                    problems.append(f"{where}: {selector.name} has no label {label}")
                elif op == "=" and value not in labels[label]:
                    problems.append(f"{where}: {selector.name}{{{label}={value!r}}} is never exported")
    assert problems == []
    assert checked >= 20  # the queries were read, not skipped
