"""``bus-tasks serve --http`` as a separate process over the real RabbitMQ (each test its own
vhost): the API equals RPC's answers, the watch resumes with ``Last-Event-ID``, the 404 form,
metrics that move by exactly the events published, control behind a token, health while the
broker is away."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from support.brokers import RABBITMQ, Broker
from support.cli_helpers import run_cli
from support.faultproxy import FaultProxy
from support.processes import BIN, Process
from support.vhosts import VhostPool

from bus_tasks import transport
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until
from bus_tasks.transport import BusOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

READY_TIMEOUT_S = 30.0
TOKEN = "a-token-of-this-test-0123456789"
UNKNOWN = "00000000-0000-4000-8000-000000000999"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Served:
    process: Process
    base: str  # http://127.0.0.1:PORT

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


Serve = Callable[..., Served]


@pytest.fixture
def vhost_broker(rabbitmq_vhosts: VhostPool) -> Iterator[Broker]:
    """A RabbitMQ vhost of this test alone, deleted after it."""
    vhost = rabbitmq_vhosts.take()
    broker = Broker("rabbitmq", f"amqp://guest:guest@127.0.0.1:5672/{vhost}")
    try:
        yield broker
    finally:
        broker.close_all()
        rabbitmq_vhosts.done(vhost)


@pytest.fixture
def serve(vhost_broker: Broker, tmp_path: Path) -> Iterator[Serve]:
    """``serve(*args, broker_url=None, **env)``: ``bus-tasks serve --http 127.0.0.1:0``, ready."""
    started: list[Process] = []

    def start(*args: str, broker_url: str | None = None, **env: str) -> Served:
        argv = [str(BIN / "bus-tasks"), "serve", "--broker", broker_url or vhost_broker.url]
        argv += ["--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0", *args]
        process = Process(argv, env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", **env}, cwd=tmp_path)
        started.append(process)
        served = Served(process, process.wait_for_http(timeout_s=READY_TIMEOUT_S))
        process.wait_for_line("aggregator ready", timeout_s=READY_TIMEOUT_S)
        wait_until(lambda: request(served, "/readyz")[0] == 200, timeout_s=READY_TIMEOUT_S, what="readyz")
        return served

    yield start
    for process in started:
        process.kill()


def request(
    served: Served, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """Status, body (JSON decoded unless it is not JSON) and headers of one request."""
    req = urllib.request.Request(served.base + path, method=method, headers=headers or {})
    try:
        with _NO_PROXY.open(req, timeout=20) as response:
            status, body, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            status, body, got = exc.code, exc.read(), dict(exc.headers)
    try:
        return status, json.loads(body), got
    except ValueError:
        return status, body.decode(), got


@dataclass(frozen=True)
class Event:
    event: str
    id: int | None
    data: Any


class EventStream:
    """``GET /api/watch`` read event by event (keep-alive comments skipped), with a deadline."""

    def __init__(
        self, served: Served, path: str = "/api/watch", headers: dict[str, str] | None = None
    ) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
        self.connection.request("GET", path, headers=headers or {})
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("Content-Type") == "text/event-stream"

    def next(self) -> Event:
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line == "" and fields:
                event_id = int(fields["id"]) if "id" in fields else None
                return Event(fields["event"], event_id, json.loads(fields["data"]))
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def close(self) -> None:
        self.connection.close()


def publisher(broker: Broker, subsystem: str = "vdsm") -> TaskPublisher:
    return TaskPublisher(transport.open(broker.url, BusOptions(confirm_publish=True)), subsystem)


def test_every_read_endpoint_answers_as_the_rpc_does(vhost_broker: Broker, serve: Serve) -> None:
    served = serve()
    pub = publisher(vhost_broker)
    spm = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    both = pub.create("createVolume", ["spm", "volume:gv1"], state=State.RUNNING).id
    pub.create("rebalance", ["gluster", "volume:gv1"], state=State.RUNNING)
    pub.flush(10.0)
    with TasksClient(transport.open(vhost_broker.url), timeout_s=10) as client:
        wait_until(lambda: len(client.get_all_tasks()) == 3, timeout_s=20, what="three tasks")
        for query, tags, options in [
            ("", None, None),
            ("?tag=spm", ["spm"], None),
            ("?tag=spm&tag=gluster", ["spm", "gluster"], None),
            ("?tag=spm&tag=volume:gv1&match=all", ["spm", "volume:gv1"], {"match": "all"}),
        ]:
            status, body, headers = request(served, "/api/tasks" + query)
            assert (status, body) == (200, client.get_all_tasks(tags, options)), query
            assert int(headers["X-Bus-Tasks-Revision"]) >= 3
        assert request(served, f"/api/tasks/{both}")[:2] == (200, client.get_task_details(both))
    assert request(served, f"/api/tasks/{UNKNOWN}")[:2] == (
        404,
        {"code": 401, "message": f"Task id unknown: ('{UNKNOWN}',)"},
    )
    assert request(served, "/api/tasks?tag=a%20b")[:2] == (
        400,
        {"code": 1000, "message": "Invalid parameter: ('tags', 'a b')"},
    )
    assert request(served, "/api/tasks?match=foo")[0] == 400
    assert request(served, "/healthz")[:2] == (200, {"status": "serving"})
    assert request(served, "/readyz")[:2] == (200, {"status": "ready"})
    assert request(served, "/api/config")[:2] == (200, {"control": False, "authorization": False})
    status, page, headers = request(served, "/")
    assert (status, headers["Content-Type"]) == (200, "text/html")
    assert "app.js" in page
    assert request(served, "/app.js")[0] == 200
    assert request(served, f"/api/tasks/{spm}/stop", method="POST")[0] == 403  # control is off
    pub.close()


def test_the_watch_resumes_with_last_event_id_with_exactly_what_was_missed(
    vhost_broker: Broker, serve: Serve
) -> None:
    served = serve()
    pub = publisher(vhost_broker)
    first = EventStream(served)
    snapshot = first.next()
    assert (snapshot.event, snapshot.data["tasks"]) == ("snapshot", {})
    seen: dict[str, dict[str, Any]] = {}
    before = [pub.create("copyImage", ["spm"], state=State.RUNNING).id for _ in range(3)]
    pub.flush(10.0)
    last_id = snapshot.id
    while set(seen) != set(before):
        event = first.next()
        assert event.event in ("change", "bookmark"), event
        if event.event == "change":
            seen[event.data["id"]] = {"revision": event.data["revision"], "task": event.data["task"]}
        assert event.id is not None
        last_id = event.id
    first.close()
    assert last_id is not None
    # An id never claims a revision whose changes may not all have come: at worst the one before.
    assert max(s["revision"] for s in seen.values()) - 1 <= last_id

    pub.update(before[0], progress=50)
    after = [pub.create("createVolume", ["hsm"], state=State.RUNNING).id for _ in range(2)]
    pub.finish(before[1], message="done")
    pub.flush(10.0)
    with TasksClient(transport.open(vhost_broker.url), timeout_s=10) as client:
        wait_until(lambda: len(client.get_all_tasks()) == 5, timeout_s=20, what="five tasks")
        expected = client.get_all_tasks()

    had = {(i, s["revision"]) for i, s in seen.items()}
    resumed = EventStream(served, headers={"Last-Event-ID": str(last_id)})
    missed: list[Event] = []
    repeated: list[Event] = []
    while len(missed) < 4:
        event = resumed.next()
        assert event.event in ("change", "bookmark"), event  # no snapshot: a resume
        if event.event == "change":
            assert event.data["revision"] > last_id, event  # nothing it had for sure comes again
            new = (event.data["id"], event.data["revision"]) not in had
            (missed if new else repeated).append(event)
    resumed.close()
    assert [e.data["id"] for e in missed] == [before[0], *after, before[1]]
    # Only the last change it saw may come again (its id was the revision before it).
    assert [e.data["id"] for e in repeated] in ([], [before[2]])
    for event in missed:
        seen[event.data["id"]] = {"revision": event.data["revision"], "task": event.data["task"]}
    assert {i: s["task"] for i, s in seen.items()} == expected
    pub.close()


def _applied(served: Served) -> float:
    status, text, headers = request(served, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    match = re.search(r'^bus_tasks_events_total\{outcome="applied"\} (\S+)$', text, re.MULTILINE)
    assert match is not None, text[:2000]
    return float(match.group(1))


def test_metrics_move_by_exactly_the_number_of_events_published(vhost_broker: Broker, serve: Serve) -> None:
    served = serve()
    pub = publisher(vhost_broker)
    pub.create("copyImage", ["spm"], state=State.RUNNING)
    pub.flush(10.0)
    wait_until(lambda: _applied(served) >= 1, timeout_s=20, what="the first event counted")
    start = _applied(served)

    ids = [pub.create("copyImage", ["spm"], state=State.RUNNING).id for _ in range(7)]
    for task_id in ids[:4]:
        pub.finish(task_id, message="done")
    pub.flush(10.0)
    published = len(ids) + 4

    wait_until(lambda: _applied(served) >= start + published, timeout_s=20, what="every event counted")
    assert _applied(served) == start + published

    pub.update(ids[5], progress=10)  # one more: one more
    pub.flush(10.0)
    wait_until(lambda: _applied(served) >= start + published + 1, timeout_s=20, what="the last event")
    assert _applied(served) == start + published + 1
    pub.close()


def test_control_needs_the_token_and_goes_through_task_stop_and_task_clear(
    vhost_broker: Broker, serve: Serve, tmp_path: Path
) -> None:
    served = serve("--http-control", BUS_TASKS_HTTP_TOKEN=TOKEN)
    assert request(served, "/api/config")[:2] == (200, {"control": True, "authorization": False})
    done = run_cli("inject", "--broker", vhost_broker.url, "--tag", "spm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (task_id,) = done.stdout.split()
    wait_until(lambda: request(served, f"/api/tasks/{task_id}")[0] == 200, timeout_s=20, what="the task")

    status, body, headers = request(served, f"/api/tasks/{task_id}/stop", method="POST")
    assert (status, body["code"], headers["WWW-Authenticate"][:6]) == (401, 100, "Bearer")
    wrong = {"Authorization": "Bearer not-the-token-of-this-test"}
    assert request(served, f"/api/tasks/{task_id}/stop", method="POST", headers=wrong)[0] == 401
    assert TOKEN not in served.process.log

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert request(served, f"/api/tasks/{task_id}/stop", method="POST", headers=auth)[:2] == (200, True)
    # The test subsystem (the aggregator's own) answers a stop by ending the task.
    wait_until(
        lambda: request(served, f"/api/tasks/{task_id}")[1]["state"] == "recovered",
        timeout_s=20,
        what="the stopped task finished",
    )
    assert request(served, f"/api/tasks/{task_id}/clear", method="POST", headers=auth)[:2] == (200, True)
    assert request(served, f"/api/tasks/{task_id}")[0] == 404
    assert task_id not in request(served, "/api/tasks")[1]


def test_healthz_is_503_while_the_broker_is_away_and_200_once_it_is_back(
    vhost_broker: Broker, serve: Serve
) -> None:
    with FaultProxy(RABBITMQ) as proxy:
        served = serve(broker_url=vhost_broker.via(proxy.port), BUS_TASKS_HEARTBEAT_S="2")
        assert request(served, "/healthz")[:2] == (200, {"status": "serving"})

        proxy.refuse(True)
        proxy.drop_all()
        wait_until(lambda: request(served, "/healthz")[0] == 503, timeout_s=20, what="healthz 503")
        status, body, _ = request(served, "/healthz")
        assert (status, body["status"]) == (503, "unavailable")
        assert "broker connection is down" in body["reason"]
        assert request(served, "/readyz")[0] == 200  # it was ready: it is not starting again

        proxy.refuse(False)
        wait_until(lambda: request(served, "/healthz")[0] == 200, timeout_s=60, what="healthz 200 again")
        assert request(served, "/api/tasks")[:2] == (200, {})
        status = served.process.terminate(timeout_s=20.0)
        assert status == 0, served.process.log


def test_under_load_every_answer_is_whole_and_the_watch_ends_equal_to_the_listing(
    vhost_broker: Broker, serve: Serve
) -> None:
    """Events pour in while the API, metrics, health and a watch are read at once: the front
    door reads no object of the aggregator's loop, so nothing fails or tears."""
    served = serve()
    stream = EventStream(served)
    state: dict[str, Any] = {}
    lock = threading.Lock()
    watched = threading.Event()
    failures: list[str] = []

    def follow() -> None:
        try:
            while not watched.is_set():
                event = stream.next()
                with lock:
                    if event.event == "snapshot":
                        state.clear()
                        state.update(event.data["tasks"])
                    elif event.event == "change" and event.data["task"] is None:
                        state.pop(event.data["id"], None)
                    elif event.event == "change":
                        state[event.data["id"]] = event.data["task"]
        except Exception as exc:  # closing the stream at the end ends its read with some error
            if not watched.is_set():
                failures.append(f"watch: {exc!r}")

    def poll(path: str) -> None:
        while not watched.is_set():
            status, body, _ = request(served, path)
            if status != 200:
                failures.append(f"{path}: {status} {body}")

    threads = [threading.Thread(target=follow)]
    threads += [threading.Thread(target=poll, args=(p,)) for p in ("/api/tasks", "/metrics", "/healthz")]
    for thread in threads:
        thread.start()
    pub = publisher(vhost_broker)
    ids = [pub.create("copyImage", ["spm"], state=State.RUNNING).id for _ in range(200)]
    for task_id in ids:
        pub.update(task_id, progress=50)
    for task_id in ids[::2]:
        pub.finish(task_id, message="done")
    pub.flush(30.0)
    with TasksClient(transport.open(vhost_broker.url), timeout_s=10) as client:
        wait_until(
            lambda: sum(t["state"] == "finished" for t in client.get_all_tasks().values()) == 100,
            timeout_s=60,
            what="every event applied",
        )
        expected = client.get_all_tasks()

    def caught_up() -> bool:
        with lock:
            return state == expected

    try:
        wait_until(caught_up, timeout_s=30, interval_s=0.1, what="the watch caught up")
    finally:
        watched.set()
        stream.close()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert request(served, "/api/tasks")[1] == expected
    assert "Traceback" not in served.process.log
    pub.close()


def test_api_tasks_answers_every_task_over_max_reply_bytes_and_a_page_with_limit(
    vhost_broker: Broker, serve: Serve
) -> None:
    served = serve(BUS_TASKS_MAX_REPLY_BYTES="16384")
    pub = publisher(vhost_broker)
    ids = sorted(pub.create("copyImage", ["spm"], state=State.RUNNING).id for _ in range(150))
    pub.flush(10.0)
    wait_until(lambda: len(request(served, "/api/tasks")[1]) == 150, timeout_s=20, what="150 tasks over HTTP")
    status, body, headers = request(served, "/api/tasks")
    assert (status, sorted(body)) == (200, ids)
    status, first, headers = request(served, "/api/tasks?tag=spm&limit=20")
    assert status == 200
    assert (list(first["tasks"]), first["revision"]) == (ids[:20], int(headers["X-Bus-Tasks-Revision"]))
    listed, token = list(first["tasks"]), first["continue"]
    while token is not None:
        status, page, _ = request(served, f"/api/tasks?tag=spm&limit=100000&continue={token}")
        assert (status, page["revision"]) == (200, first["revision"])
        listed += page["tasks"]
        token = page["continue"]
    assert listed == ids
    for query in (
        "limit=0",
        "limit=100001",
        "limit=x",
        "limit=1&continue=nope",
        f"continue={first['continue']}",
    ):
        status, error, _ = request(served, "/api/tasks?" + query)
        assert (status, error["code"]) == (400, 1000), query
    status, error, _ = request(served, f"/api/tasks?tag=gluster&limit=5&continue={first['continue']}")
    assert (status, error["code"]) == (400, 1000)
    pub.close()
