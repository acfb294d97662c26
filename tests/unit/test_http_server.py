"""The HTTP front door on its own thread, loop and connections beside a running aggregator
(memory://): it says its real port, follows the aggregator's changes, and stops its streams."""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from support.brokers import Broker
from support.timing import Stopwatch, assert_ended_by

from bus_tasks.aggregator import Aggregator
from bus_tasks.frontdoors.http.mirror import Mirror
from bus_tasks.frontdoors.http.running import HttpServer, ServingHealth, apply_event, serving_beside
from bus_tasks.frontdoors.http.server import HttpOptions
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.watching import WatchEvent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def aggregator(memory_broker: Broker) -> Iterator[Aggregator]:
    aggregator = Aggregator(memory_broker.connection())
    with RunningAggregator(aggregator):
        yield aggregator


def make_server(broker: Broker, aggregator: Aggregator, port: int = 0) -> HttpServer:
    return serving_beside(
        ServingHealth(aggregator.ready, aggregator.connected),
        aggregator.metrics.registry,
        lambda: broker.connection(confirm_publish=False),
        host="127.0.0.1",
        port=port,
        rpc_timeout_s=5.0,
        options=HttpOptions(),
    )


def get(server: HttpServer, path: str) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def read_event(response: http.client.HTTPResponse) -> dict[str, str]:
    fields: dict[str, str] = {}
    while True:
        line = response.readline().decode()
        if not line:
            raise EOFError("the stream ended")
        if line == "\n" and fields:
            return fields
        if not line.startswith(":"):
            name, _, value = line.rstrip("\n").partition(": ")
            fields[name] = value


def test_the_server_says_its_real_port_follows_the_changes_and_stops_its_streams(
    memory_broker: Broker, aggregator: Aggregator, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(memory_broker, aggregator)
    with caplog.at_level(logging.INFO, logger="bus_tasks.frontdoors.http"):
        server.start()
    assert server.port != 0
    assert f"http serving on http://127.0.0.1:{server.port}" in caplog.messages
    try:
        wait_until(lambda: get(server, "/readyz")[0] == 200, timeout_s=10, what="ready")
        stream = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        stream.request("GET", "/api/watch?tag=spm")
        response = stream.getresponse()
        assert read_event(response)["event"] == "snapshot"

        publisher = TaskPublisher(memory_broker.connection(), "vdsm")
        task_id = publisher.create("copyImage", ["spm"]).id
        change = read_event(response)
        assert change["event"] == "change"
        assert json.loads(change["data"])["task"] == get(server, f"/api/tasks/{task_id}")[1]
        assert get(server, "/api/tasks") == (200, {task_id: json.loads(change["data"])["task"]})
    finally:
        with Stopwatch() as watch:
            server.stop()
        assert_ended_by(watch, 5.0)
    with pytest.raises(EOFError):
        read_event(response)
    stream.close()
    publisher.close()


def test_a_port_in_use_is_an_os_error_at_start(memory_broker: Broker, aggregator: Aggregator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = make_server(memory_broker, aggregator, port=taken.getsockname()[1])
        with pytest.raises(OSError, match="address already in use"):
            server.start()


def test_the_watchs_next_message_settles_the_revision_of_the_last() -> None:
    mirror = Mirror()
    apply_event(mirror, WatchEvent("listing", 10, tasks={}))
    apply_event(mirror, WatchEvent("changed", 12, "a", {"id": "a", "tags": []}))
    assert mirror.complete == 11  # more changes of 12 may come
    apply_event(mirror, WatchEvent("removed", 15, "a"), settled=12)
    assert (mirror.complete, mirror.revision, mirror.tasks) == (14, 15, {})
    apply_event(mirror, WatchEvent("bookmark", 15))
    assert mirror.complete == 15
