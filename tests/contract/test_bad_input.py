"""Bad input never stops the aggregator (SPEC 4-5): poison events are dead-lettered with a reason,
bad requests get their JSON-RPC error, and everything valid around them is still served."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support.brokers import Broker, System, SystemFactory

from bus_tasks import codec, names
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.client import TasksClient
from bus_tasks.core.model import SUBSYSTEM_PATTERN, TAG_PATTERN, State, decode_event
from bus_tasks.errors import BusTasksError, EventRejected, InvalidParameter, InvalidParams, MethodNotFound
from bus_tasks.protocol import vdsm as legacy
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.transport import BusConnection, Delivery

TIMEOUT_S = 10.0
SMALL_EVENT_BYTES = 4096
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
OWNED_ID = "5b0a7f3e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"

RunAggregator = Callable[..., RunningAggregator]


# -- helpers ------------------------------------------------------------------------------


def event(
    task_id: str | None = None, *, subsystem: str = "vdsm", seq: int = 1, name: str = "created", **task: Any
) -> dict[str, Any]:
    """A valid event as a subsystem would send it; ``task`` overrides fields of the record."""
    record = {
        "id": task_id or str(uuid.uuid4()),
        "subsystem": subsystem,
        "verb": "createVolume",
        "tags": ["spm"],
        "state": "running",
        "created_at": "2024-05-01T12:00:00Z",
        "updated_at": "2024-05-01T12:00:01Z",
        **task,
    }
    return {"schema": 1, "event": name, "seq": seq, "task": record}


def encode(value: Any) -> bytes:
    # The stdlib encoder, not bus_tasks.codec: the bytes under test do not come from the code under test.
    return json.dumps(value, ensure_ascii=False).encode()


def publish_event(conn: BusConnection, body: bytes, routing_key: str = "task.x.created") -> None:
    conn.publish(body, exchange=names.EVENTS_EXCHANGE, routing_key=routing_key)


def read_dead_letters(conn: BusConnection, count: int, *, timeout_s: float = TIMEOUT_S) -> list[Delivery]:
    """Take (and ack) ``count`` messages from ``bus_tasks.dead``; fails if one more is there."""
    letters: list[Delivery] = []

    def fetch() -> bool:
        while len(letters) < count and (letter := conn.get(names.DEAD_QUEUE)) is not None:
            letter.ack()
            letters.append(letter)
        return len(letters) == count

    wait_until(fetch, timeout_s=timeout_s, what=f"{count} dead letters")
    assert conn.get(names.DEAD_QUEUE) is None, "more dead letters than poison events"
    return letters


def rejection_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("bus_tasks.aggregator") and r.getMessage().startswith("event rejected")
    ]


def expected_details(body: bytes) -> dict[str, Any]:
    """The TaskDetails the view must show for a valid event body."""
    record = decode_event(body, max_bytes=len(body)).task
    return codec.loads(codec.dumps(legacy.task_details(record)))  # type: ignore[no-any-return]


@pytest.fixture
def run_aggregator() -> Iterator[RunAggregator]:
    """Like ``start_system``, but hands back the RunningAggregator, to notice at once if it dies."""
    started: list[RunningAggregator] = []

    def start(broker: Broker, *, policy: AggregatorPolicy | None = None) -> RunningAggregator:
        running = RunningAggregator(Aggregator(broker.connection(), policy=policy))
        running.__enter__()
        started.append(running)
        return running

    yield start
    deaths = []
    for running in reversed(started):
        try:
            running.__exit__(None, None, None)  # re-raises what the aggregator thread died of
        except RuntimeError as exc:
            # The innermost frames only: a RecursionError's traceback is thousands of frames long.
            cause = exc.__cause__ or exc
            deaths.append("".join(traceback.format_exception(cause, limit=-12, chain=False)))
    started.clear()
    if deaths:
        pytest.fail("the aggregator thread died:\n" + "\n".join(deaths), pytrace=False)


# -- one poison event of each class --------------------------------------------------------


def assert_dead_lettered(system: System, body: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    """``body`` ends in bus_tasks.dead, intact, with a reason matching ``reason`` (a regex);
    it is counted and logged in one line, and the aggregator goes on serving."""
    conn = system.broker.connection()
    publish_event(conn, body)

    [letter] = read_dead_letters(conn, 1)
    assert letter.body == body
    assert re.fullmatch(reason, letter.headers[names.HEADER_REASON]), letter.headers
    assert letter.headers["x-original-routing-key"] == "task.x.created"
    assert system.aggregator.counts["events_dead"] == 1
    [line] = rejection_lines(caplog)
    assert line == f"event rejected key='task.x.created': {letter.headers[names.HEADER_REASON]!r}"
    assert "\n" not in line

    after = system.publisher("vdsm").create("afterPoison", ["after"])
    client = system.client()
    tasks = wait_until(lambda: client.get_all_tasks("after"), timeout_s=TIMEOUT_S, what="a valid event")
    assert list(tasks) == [after.id]
    assert system.aggregator.counts["events_dead"] == 1


def test_an_event_that_is_not_json_is_dead_lettered(
    broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    body = encode(event())[:-20]  # cut short, as by a crashed producer
    assert_dead_lettered(start_system(broker), body, r"not valid JSON: .+", caplog)


def test_an_event_that_is_not_utf8_is_dead_lettered(
    broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(event(verb="créerVolume"), ensure_ascii=False).encode("latin-1")
    assert_dead_lettered(start_system(broker), body, r"not valid JSON: .*UTF-8.*", caplog)


def test_an_event_larger_than_max_event_bytes_is_dead_lettered(
    broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    body = encode(event(data={"padding": "x" * SMALL_EVENT_BYTES}))
    system = start_system(broker, policy=AggregatorPolicy(max_event_bytes=SMALL_EVENT_BYTES))
    assert_dead_lettered(
        system, body, re.escape(f"too large: {len(body)} bytes > {SMALL_EVENT_BYTES}"), caplog
    )


def test_an_event_of_an_unknown_schema_is_dead_lettered(
    broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    body = encode({**event(), "schema": 2})
    assert_dead_lettered(start_system(broker), body, re.escape("unknown schema 2"), caplog)


def test_an_event_invalid_per_the_model_is_dead_lettered(
    broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    body = encode(event(seq=0))
    assert_dead_lettered(start_system(broker), body, r"invalid event: seq: .+", caplog)


def test_an_event_for_a_task_owned_by_another_subsystem_is_dead_lettered_and_the_task_kept(
    broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    system = start_system(broker)
    owned = system.publisher("vdsm").create("createVolume", ["spm"])
    client = system.client()
    before = wait_until(lambda: client.get_all_tasks("spm"), timeout_s=TIMEOUT_S, what="the owned task")

    body = encode(event(owned.id, subsystem="gluster", seq=2**62, verb="rebalance"))
    reason = f"task {owned.id} is owned by subsystem 'vdsm', not 'gluster'"
    assert_dead_lettered(system, body, re.escape(reason), caplog)
    assert client.get_all_tasks("spm") == before


# Bursts skip fakeredis: its pure-Python server moves a few dozen messages a second.
BURST_TRANSPORTS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.integration),
    pytest.param("rabbitmq", marks=pytest.mark.integration),
]
BURST = 300


@pytest.mark.parametrize("broker", BURST_TRANSPORTS, indirect=True)
def test_a_burst_of_poison_events_is_all_dead_lettered_without_the_aggregator_dying(
    broker: Broker, run_aggregator: RunAggregator
) -> None:
    # Dead letters are published from inside the delivery handler, and py-amqp's basic_publish
    # first reads pending frames, which may deliver the next message inside the current
    # handler: a burst must not nest handlers until a RecursionError kills the aggregator.
    running = run_aggregator(broker)
    conn = broker.connection()
    bodies = [b"{%d" % i if i % 2 else b"[%d]" % i for i in range(BURST)]  # not JSON, not an object
    for body in bodies:
        publish_event(conn, body)

    def all_dead() -> bool:
        running.check()
        return running.aggregator.counts["events_dead"] == len(bodies)

    wait_until(all_dead, timeout_s=30, what="every poison event dead-lettered")
    letters = read_dead_letters(conn, len(bodies))
    assert sorted(d.body for d in letters) == sorted(bodies)
    assert TasksClient(broker.connection(confirm_publish=False)).get_all_tasks() == {}
    running.check()


# -- generated poison, interleaved with valid events ----------------------------------------

GENERATED_MAX_EVENT_BYTES = 8192
ROUNDS = 150  # of 7 poison events and 1 valid one: 1,050 poison events

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
NOT_INT = st.text(max_size=5) | st.floats() | st.booleans() | st.none() | st.lists(st.integers(), max_size=2)
SUBSYSTEMS = st.from_regex(SUBSYSTEM_PATTERN, fullmatch=True)
TAGS = st.from_regex(TAG_PATTERN, fullmatch=True)
AWARE_TIMES = st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
STATES = [s.value for s in State]


def valid_events() -> st.SearchStrategy[dict[str, Any]]:
    """Events the model accepts (sizes bounded so they stay under GENERATED_MAX_EVENT_BYTES)."""
    task = st.fixed_dictionaries(
        {
            "id": st.uuids().map(str),
            "subsystem": SUBSYSTEMS,
            "verb": st.text(min_size=1, max_size=40),
            "tags": st.lists(TAGS, max_size=4, unique=True),
            "state": st.sampled_from(STATES),
            "created_at": AWARE_TIMES,
            "updated_at": AWARE_TIMES,
        },
        optional={
            "code": st.integers(-(2**31), 2**31 - 1),
            "message": st.text(max_size=40),
            "result": JSON_VALUES,
            "progress": st.none() | st.integers(0, 100),
            "data": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
            "field_of_a_newer_producer": JSON_VALUES,
        },
    )
    return st.fixed_dictionaries(
        {
            "schema": st.just(1),
            "event": st.sampled_from(["created", "updated", "finished"]),
            "seq": st.integers(1, 2**63 - 1),
            "task": task,
        }
    )


def with_field(path: tuple[str, ...], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    def put(value_event: dict[str, Any], value: Any) -> dict[str, Any]:
        target = value_event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return value_event

    return st.builds(put, valid_events(), values)


def without_field(path: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    def drop(value_event: dict[str, Any]) -> dict[str, Any]:
        target = value_event
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return value_event

    return valid_events().map(drop)


def not_matching(pattern: str) -> st.SearchStrategy[str]:
    return st.text(max_size=70).filter(lambda s: not re.fullmatch(pattern, s))


BAD_UTF8 = [b"\xff", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xe9t\xe9"]
MARK = "@@not-utf8@@"


def not_utf8(bad: bytes) -> Callable[[dict[str, Any]], bytes]:
    def spoil(value_event: dict[str, Any]) -> bytes:
        value_event["task"]["verb"] = MARK
        return encode(value_event).replace(MARK.encode(), bad)

    return spoil


BROKEN_EVENTS = st.one_of(
    with_field(("schema",), st.integers().filter(lambda n: n != 1) | JSON_LEAVES),
    with_field(("event",), st.text(max_size=10)),
    with_field(("seq",), st.integers(max_value=0) | NOT_INT),
    with_field(("task",), JSON_LEAVES | st.lists(JSON_LEAVES, max_size=3)),
    with_field(
        ("task", "id"),
        st.text(max_size=40)
        | st.uuids().map(lambda u: u.hex)
        | st.uuids().map(lambda u: f"{{{u}}}")
        | st.uuids().map(lambda u: u.urn),
    ),
    with_field(("task", "subsystem"), not_matching(SUBSYSTEM_PATTERN)),
    with_field(("task", "verb"), st.just("") | st.text(min_size=129, max_size=140) | NOT_INT),
    with_field(
        ("task", "tags"),
        st.lists(TAGS, min_size=33, max_size=36, unique=True)
        | st.lists(TAGS, min_size=1, max_size=3).map(lambda tags: [*tags, tags[0]])
        | st.lists(not_matching(TAG_PATTERN), min_size=1, max_size=3)
        | st.text(max_size=10),
    ),
    with_field(("task", "state"), st.text(max_size=12) | JSON_LEAVES),
    with_field(("task", "code"), NOT_INT),
    with_field(("task", "progress"), st.integers(max_value=-1) | st.integers(min_value=101) | NOT_INT),
    with_field(("task", "created_at"), st.datetimes().map(datetime.isoformat) | st.text(max_size=20)),
    with_field(("task", "data"), JSON_LEAVES | st.lists(JSON_LEAVES, max_size=3)),
    *[
        without_field(path)
        for path in [
            ("event",),
            ("seq",),
            ("task",),
            ("task", "id"),
            ("task", "subsystem"),
            ("task", "verb"),
            ("task", "state"),
            ("task", "created_at"),
        ]
    ],
)


def local_reason(body: bytes) -> str | None:
    """Why the aggregator must reject ``body`` on its own (None: it is a valid event)."""
    try:
        decode_event(body, max_bytes=GENERATED_MAX_EVENT_BYTES)
    except EventRejected as exc:
        return exc.reason
    return None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _rejected(body: bytes) -> tuple[bytes, str]:
    reason = local_reason(body)
    assert reason is not None
    return body, reason


def _foreign(body: bytes) -> tuple[bytes, str]:
    subsystem = json.loads(body)["task"]["subsystem"]
    return body, f"task {OWNED_ID} is owned by subsystem 'vdsm', not {subsystem!r}"


# One strategy per class of poison, each yielding (body, the reason the aggregator must give).
# Each is kept only if decode_event really rejects it (FOREIGN: only if it really accepts it).
POISON_CLASSES = [
    st.binary(min_size=1, max_size=100),  # random bytes
    JSON_VALUES.map(encode),  # JSON, but not an event
    with_field(("schema",), st.integers().filter(lambda n: n != 1) | JSON_LEAVES).map(encode),
    BROKEN_EVENTS.map(encode),  # one field broken or missing
    st.builds(  # not UTF-8
        lambda e, bad: not_utf8(bad)(e),
        valid_events(),
        st.sampled_from(BAD_UTF8) | st.binary(min_size=1, max_size=4).filter(lambda b: not _is_utf8(b)),
    ),
    st.builds(  # too large
        lambda e, size: encode({**e, "task": {**e["task"], "data": {"padding": "x" * size}}}),
        valid_events(),
        st.integers(GENERATED_MAX_EVENT_BYTES, 2 * GENERATED_MAX_EVENT_BYTES),
    ),
]
POISON = [c.filter(lambda body: local_reason(body) is not None).map(_rejected) for c in POISON_CLASSES]
# Valid on its own, rejected by the view: OWNED_ID belongs to "vdsm".
FOREIGN = (
    st.builds(
        lambda e, subsystem: encode({**e, "task": {**e["task"], "id": OWNED_ID, "subsystem": subsystem}}),
        valid_events(),
        SUBSYSTEMS.filter(lambda s: s != "vdsm"),
    )
    .filter(lambda body: local_reason(body) is None)
    .map(_foreign)
)
POISON_PER_ROUND = len(POISON) + 1
ROUND = st.tuples(
    st.tuples(*POISON, FOREIGN),
    valid_events(),
    st.permutations(range(POISON_PER_ROUND + 1)),  # where each body of the round goes
)


@dataclass
class Stream:
    """What to publish, in order, and what must come of it."""

    bodies: list[bytes] = field(default_factory=list)
    poison: Counter[tuple[bytes, str]] = field(default_factory=Counter)
    valid: dict[str, dict[str, Any]] = field(default_factory=dict)


def generate_stream() -> Stream:
    """Generate the whole stream with hypothesis before anything is published.

    The property is about one long stream through one running aggregator, so it cannot be one
    hypothesis example per message; and a single example holding over a thousand bodies
    overruns hypothesis's per-example data budget. So each example is one round (a poison body
    of each class and one valid event, in a generated order) and checks locally what each must
    be; the rounds are concatenated and published in one go. Generate-only: shrinking a round
    says nothing about a failure of the whole stream, which the assertions report by body.
    Hypothesis favours simple and boundary values, so some bodies recur (``null``, ``[]`` ...):
    every copy must be dead-lettered, and the Counter of (body, reason) checks exactly that.
    """
    stream = Stream()

    @settings(
        max_examples=ROUNDS,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(ROUND)
    def collect(round_: tuple[tuple[tuple[bytes, str], ...], dict[str, Any], list[int]]) -> None:
        poison, valid, order = round_
        # Unique ids, never OWNED_ID: every valid event must be applied.
        valid["task"]["id"] = str(uuid.UUID(int=len(stream.valid) + 1, version=4))
        body = encode(valid)
        assert local_reason(body) is None, "valid_events() made an invalid event"
        bodies = [*(b for b, _ in poison), body]
        stream.bodies += [bodies[i] for i in order]
        stream.poison.update((b, reason[:1000]) for b, reason in poison)  # dead_letter keeps 1000 chars
        stream.valid[valid["task"]["id"]] = expected_details(body)

    collect()
    return stream


@pytest.mark.parametrize(
    "broker", ["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)], indirect=True
)
def test_a_thousand_generated_poison_events_are_dead_lettered_and_valid_ones_reach_the_view(
    broker: Broker, run_aggregator: RunAggregator, caplog: pytest.LogCaptureFixture
) -> None:
    stream = generate_stream()
    poison_count = sum(stream.poison.values())
    assert poison_count >= 1000
    assert len(stream.valid) == ROUNDS

    running = run_aggregator(broker, policy=AggregatorPolicy(max_event_bytes=GENERATED_MAX_EVENT_BYTES))
    counts = running.aggregator.counts
    conn = broker.connection()
    owned_body = encode(event(OWNED_ID, subsystem="vdsm"))
    publish_event(conn, owned_body)
    wait_until(lambda: counts["events_applied"] == 1, timeout_s=TIMEOUT_S, what="the owned task")

    for body in stream.bodies:
        publish_event(conn, body)

    def all_handled() -> bool:
        running.check()
        handled = counts["events_dead"] + counts["events_applied"] + counts["events_stale"]
        return handled >= poison_count + len(stream.valid) + 1

    wait_until(all_handled, timeout_s=45, what="every generated event handled")
    letters = read_dead_letters(conn, poison_count)
    dead = Counter((letter.body, letter.headers[names.HEADER_REASON]) for letter in letters)
    assert dead == stream.poison, {"missing": stream.poison - dead, "unexpected": dead - stream.poison}
    view = TasksClient(broker.connection(confirm_publish=False)).get_all_tasks()
    assert view == {OWNED_ID: expected_details(owned_body), **stream.valid}
    assert counts["events_dead"] == poison_count
    assert counts["events_applied"] == len(stream.valid) + 1
    assert counts["events_stale"] == 0
    lines = rejection_lines(caplog)
    assert len(lines) == poison_count
    assert not [line for line in lines if "\n" in line]
    running.check()


# -- bad requests ---------------------------------------------------------------------------


class RawCaller:
    """Sends raw bodies to ``bus_tasks.rpc`` with a reply queue, and collects the replies."""

    def __init__(self, conn: BusConnection) -> None:
        self.conn = conn
        self.queue = conn.declare_reply_queue(names.REPLY_QUEUE_PREFIX)
        self.replies: dict[str, bytes] = {}
        conn.consume(self.queue, self._on_reply, no_ack=True)

    def _on_reply(self, delivery: Delivery) -> None:
        assert delivery.correlation_id is not None
        self.replies[delivery.correlation_id] = delivery.body

    def send(self, body: bytes, *, sent_at: float | None = None, expiration_s: float = TIMEOUT_S) -> str:
        correlation_id = uuid.uuid4().hex
        self.conn.publish(
            body,
            routing_key=names.RPC_QUEUE,
            reply_to=self.queue,
            correlation_id=correlation_id,
            expiration_s=expiration_s,
            headers={names.HEADER_SENT_AT: time.time() if sent_at is None else sent_at},
            persistent=False,
        )
        return correlation_id

    def wait(
        self,
        correlation_ids: list[str],
        *,
        timeout_s: float = TIMEOUT_S,
        check: Callable[[], None] = lambda: None,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while not all(c in self.replies for c in correlation_ids):
            check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sum(c not in self.replies for c in correlation_ids)
                raise TimeoutError(
                    f"{missing} of {len(correlation_ids)} replies missing after {timeout_s:g}s"
                )
            self.conn.drain(min(remaining, 0.5))
        return [json.loads(self.replies[c]) for c in correlation_ids]


def request(request_id: Any, method: str, params: Any = None, **members: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}, **members})


SMALL_REQUEST_BYTES = 4096

# (case, body, the reply's id, error code): the request's id when it can be read, else null.
RAW_REQUESTS = [
    ("not JSON", b'{"jsonrpc": "2.0", "id": 1, "method": "getAllTasks"', None, -32700),
    (
        "not UTF-8",
        b'{"jsonrpc": "2.0", "id": 2, "method": "getAllTasks", "params": {"tags": "caf\xe9"}}',
        None,
        -32700,
    ),
    ("a batch", encode([{"jsonrpc": "2.0", "id": 3, "method": "getAllTasks"}]), None, -32600),
    ("a string", b'"getAllTasks"', None, -32600),
    ("no jsonrpc member", encode({"id": 5, "method": "getAllTasks"}), 5, -32600),
    ("a number for a method", encode({"jsonrpc": "2.0", "id": 6, "method": 7}), 6, -32600),
    ("an unknown method", request(7, "Host.rmAllTasks"), 7, -32601),
    ("params of the wrong type", request(8, "getAllTasks", {"tags": 5}), 8, -32602),
    ("an extra param", request(9, "Task.getStatus", {"taskID": UNKNOWN_ID, "force": True}), 9, -32602),
    ("a tag with '='", request(10, "getAllTasks", {"tags": ["a=b"]}), 10, 1000),
    (
        "over max_request_bytes",
        request(11, "getAllTasks", {"tags": "x" * SMALL_REQUEST_BYTES}),
        None,
        -32600,
    ),
]


def test_malformed_request_bodies_get_their_json_rpc_error_and_the_server_keeps_answering(
    broker: Broker, start_system: SystemFactory
) -> None:
    system = start_system(broker, policy=AggregatorPolicy(max_request_bytes=SMALL_REQUEST_BYTES))
    caller = RawCaller(broker.connection(confirm_publish=False))
    sent = [caller.send(body) for _, body, _, _ in RAW_REQUESTS]  # all at once: none may block the next

    replies = caller.wait(sent)

    answered = [
        (case, reply.get("id"), reply.get("error", {}).get("code"))
        for case, reply in zip([c for c, *_ in RAW_REQUESTS], replies, strict=True)
    ]
    assert answered == [(case, request_id, code) for case, _, request_id, code in RAW_REQUESTS]
    for reply in replies:
        assert set(reply) == {"jsonrpc", "id", "error"}
        assert reply["jsonrpc"] == "2.0"
        assert set(reply["error"]) == {"code", "message"}
        assert isinstance(reply["error"]["message"], str)
        assert reply["error"]["message"]
    assert replies[-1]["error"]["message"].startswith("Invalid request: request of ")
    assert system.client().get_all_tasks() == {}


def test_well_formed_calls_with_bad_params_get_their_json_rpc_error(
    broker: Broker, start_system: SystemFactory
) -> None:
    client = start_system(broker).client()
    calls: list[tuple[str, dict[str, Any], type[BusTasksError], int, str]] = [
        ("Host.rmAllTasks", {}, MethodNotFound, -32601, "Method not found: 'Host.rmAllTasks'"),
        ("Host.getAllTasks", {"tags": 5}, InvalidParams, -32602, "Invalid params: tags"),
        ("Host.getAllTasks", {"tags": [1, 2]}, InvalidParams, -32602, "Invalid params: tags"),
        (
            "Task.getStatus",
            {"taskID": UNKNOWN_ID, "force": True},
            InvalidParams,
            -32602,
            "Invalid params: force",
        ),
        ("Task.getStatus", {}, InvalidParams, -32602, "Invalid params: taskID"),
        (
            "Host.getAllTasks",
            {"tags": [f"tag{i}" for i in range(10_000)]},
            InvalidParams,
            -32602,
            "Invalid params: tags: at most 256 tags, got 10000",
        ),
        ("Host.getAllTasks", {"tags": ["a=b"]}, InvalidParameter, 1000, "Invalid parameter: ('tags', 'a=b')"),
        ("Host.getAllTasks", {"tags": "a=b"}, InvalidParameter, 1000, "Invalid parameter: ('tags', 'a=b')"),
    ]
    for method, params, error, code, message in calls:
        with pytest.raises(error) as caught:
            client.call(method, params)
        assert (caught.value.code, caught.value.message[: len(message)]) == (code, message), (method, params)
    assert client.get_all_tasks() == {}


def test_a_request_whose_caller_gave_up_is_not_answered(broker: Broker, start_system: SystemFactory) -> None:
    system = start_system(broker)
    caller = RawCaller(broker.connection(confirm_publish=False))
    # Sent a minute ago with a 30 s deadline: the caller stopped waiting half a minute ago.
    given_up = caller.send(request(1, "getAllTasks"), sent_at=time.time() - 60, expiration_s=30)
    fresh = caller.send(request(2, "getAllTasks"))

    [reply] = caller.wait([fresh])

    assert reply == {"jsonrpc": "2.0", "id": 2, "result": {}}
    # The queue is served in order: had the stale request been answered, it would be by now.
    assert given_up not in caller.replies
    assert system.aggregator.counts["requests_expired"] == 1
    assert system.aggregator.counts["requests"] == 1


@pytest.mark.parametrize("broker", BURST_TRANSPORTS, indirect=True)
def test_a_burst_of_bad_requests_is_answered_without_the_server_dying(
    broker: Broker, run_aggregator: RunAggregator
) -> None:
    running = run_aggregator(broker, policy=AggregatorPolicy(max_request_bytes=SMALL_REQUEST_BYTES))
    caller = RawCaller(broker.connection(confirm_publish=False))
    cases = RAW_REQUESTS * (BURST // len(RAW_REQUESTS))
    sent = [caller.send(body) for _, body, _, _ in cases]

    replies = caller.wait(sent, timeout_s=30, check=running.check)

    assert [r["error"]["code"] for r in replies] == [code for *_, code in cases]
    assert TasksClient(broker.connection(confirm_publish=False)).get_all_tasks() == {}
    running.check()


def bus_tasks_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("bus_tasks") and r.levelno >= logging.WARNING]


@pytest.mark.integration
def test_a_rejected_event_is_logged_in_one_line_even_with_a_line_break_in_its_routing_key(
    rabbitmq_broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # RabbitMQ routes any bytes in a topic word (the virtual transports do not match a line break).
    system = start_system(rabbitmq_broker)
    conn = rabbitmq_broker.connection()
    key = "task.x.created\nERROR bus_tasks.aggregator: forged line"
    publish_event(conn, encode({**event(), "schema": "1\n2"}), routing_key=key)

    [letter] = read_dead_letters(conn, 1)

    assert letter.headers["x-original-routing-key"] == key
    assert system.aggregator.counts["events_dead"] == 1
    [record] = bus_tasks_warnings(caplog)
    assert record.getMessage().startswith("event rejected key=")
    assert "\n" not in record.getMessage()


def test_a_failed_request_is_logged_in_one_line_even_with_line_breaks_in_it(
    memory_broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = start_system(memory_broker).client()
    with pytest.raises(MethodNotFound):
        client.call("Host.getAllTasks\nERROR forged line")
    with pytest.raises(InvalidParams):
        client.call("Task.getStatus", {"taskID": UNKNOWN_ID, "force\nERROR forged line": True})
    with pytest.raises(InvalidParameter):
        client.get_all_tasks(["spm\nERROR forged line"])

    records = bus_tasks_warnings(caplog)
    assert len(records) == 3
    assert [r.getMessage() for r in records if "\n" in r.getMessage()] == []
