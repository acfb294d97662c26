"""``bus-tasks stomp --metrics``: its own /metrics, scraped over HTTP from a real process, moves by
exactly what a test's clients did."""

from __future__ import annotations

import os
import re
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.brokers import Broker, System
from support.ports import free_port
from support.processes import BIN, Process
from support.vdsm_stomp import RawVdsmClient

from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10.0) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(port: int, name: str, **labels: str) -> float | None:
    return scrape(port).get((name, frozenset(labels.items())))


def start(broker: Broker, port: int, metrics_port: int, *extra: str) -> Process:
    process = Process(
        [str(BIN / "bus-tasks"), "stomp", "--broker", broker.url, "--listen", f"127.0.0.1:{port}",
         "--metrics", f"127.0.0.1:{metrics_port}", *extra],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO"},
    )  # fmt: skip
    process.wait_for_line(f"stomp front door listening on 127.0.0.1:{port}", timeout_s=30)
    process.wait_for_line(f"stomp metrics on http://127.0.0.1:{metrics_port}/metrics", timeout_s=5)
    return process


def test_connections_open_go_0_2_0_beside_their_limit(rabbitmq_system: System) -> None:
    port, metrics_port = free_port(), free_port()
    process = start(rabbitmq_system.broker, port, metrics_port, "--max-connections", "7")
    try:
        assert value(metrics_port, "bus_tasks_stomp_connections") == 0
        assert value(metrics_port, "bus_tasks_stomp_connections_limit") == 7
        clients = [RawVdsmClient(port) for _ in range(2)]
        for client in clients:
            assert client.connect().command == "CONNECTED"
        assert value(metrics_port, "bus_tasks_stomp_connections") == 2
        assert clients[0].call("Host.getAllTasksStatuses")["result"] == {}
        assert value(metrics_port, "bus_tasks_stomp_requests_in_flight") == 0
        for client in clients:
            client.close()
        wait_until(
            lambda: value(metrics_port, "bus_tasks_stomp_connections") == 0,
            timeout_s=5.0,
            what="both connections closed",
        )
        samples = scrape(metrics_port)
        for reason in ("connections", "connect_timeout", "heartbeat", "outbuf", "tls_handshake"):
            assert samples[("bus_tasks_stomp_refused_total", frozenset({("reason", reason)}))] == 0
        assert samples[("bus_tasks_stomp_requests_over_pending_total", frozenset())] == 0
    finally:
        assert process.terminate() == 0, process.log


def test_one_connection_over_a_cap_of_1_counts_one_refusal(rabbitmq_system: System) -> None:
    port, metrics_port = free_port(), free_port()
    process = start(rabbitmq_system.broker, port, metrics_port, "--max-connections", "1")
    try:
        refused = ("bus_tasks_stomp_refused_total", frozenset({("reason", "connections")}))
        assert scrape(metrics_port)[refused] == 0
        first = RawVdsmClient(port)
        assert first.connect().command == "CONNECTED"
        over = RawVdsmClient(port)
        assert over.connect().command == "ERROR"
        assert over.closed_by_server(timeout_s=5.0)
        over.close()
        wait_until(
            lambda: value(metrics_port, "bus_tasks_stomp_connections") == 1,
            timeout_s=5.0,
            what="the refused connection gone",
        )
        samples = scrape(metrics_port)
        assert samples[refused] == 1
        assert samples[("bus_tasks_stomp_refused_total", frozenset({("reason", "connect_timeout")}))] == 0
        first.close()
    finally:
        assert process.terminate() == 0, process.log


def test_metrics_are_off_unless_asked(rabbitmq_system: System) -> None:
    port = free_port()
    process = Process(
        [str(BIN / "bus-tasks"), "stomp", "--broker", rabbitmq_system.broker.url, "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO"},
    )  # fmt: skip
    try:
        process.wait_for_line(f"stomp front door listening on 127.0.0.1:{port}", timeout_s=30)
        assert "stomp metrics on" not in process.log
    finally:
        assert process.terminate() == 0, process.log


def test_the_setting_without_a_host_serves_on_loopback(rabbitmq_system: System) -> None:
    port = free_port()
    process = Process(
        [str(BIN / "bus-tasks"), "stomp", "--broker", rabbitmq_system.broker.url, "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", "BUS_TASKS_STOMP_METRICS": ":0"},
    )  # fmt: skip
    try:
        line = process.lines[process.wait_for_line("stomp metrics on http://", timeout_s=30)]
        match = re.search(r"stomp metrics on http://127\.0\.0\.1:(\d+)/metrics$", line)
        assert match is not None, line
        assert value(int(match.group(1)), "bus_tasks_stomp_connections") == 0
    finally:
        assert process.terminate() == 0, process.log
