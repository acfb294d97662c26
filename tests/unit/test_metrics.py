"""The aggregator's Prometheus metrics, without a broker: names, labels, syncs, the view's counts."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from typing import cast

import orjson
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.factories import entry_of, make_event, make_record, task_id

from bus_tasks.aggregator.liveness import Liveness
from bus_tasks.aggregator.methods import Dispatcher
from bus_tasks.aggregator.metrics import Metrics
from bus_tasks.aggregator.replicas import Replicas
from bus_tasks.core.model import SCHEMA_VERSION, Announced, Event, Heartbeat, State
from bus_tasks.core.view import TaskView, Tombstone
from bus_tasks.protocol.methods import ALIASES
from bus_tasks.transport import Bus
from bus_tasks.transport.topology import Spec, Topology

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: Metrics) -> Samples:
    """Every sample of a scrape, as the exposition text says it: (name, labels) -> value."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped[name, frozenset(labels.items())]


def labels_of(scraped: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample, labels in scraped if sample == name}


def request(method: str, **params: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})


class FakeConnection:
    """What Metrics reads of a connection: the log it reads (its topology), and its reconnects."""

    def __init__(self, *, uses_stream: bool = False) -> None:
        self.replays = uses_stream  # with the default event_log = "stream": reads the stream
        self.topology = Topology(self)
        self.reconnects = 0

    def declare(self, *specs: Spec) -> None:
        raise AssertionError(f"Metrics declares nothing, not {specs}")


class Parts:
    """One aggregator's parts as Metrics sees them, with a clock of its own."""

    def __init__(self, *, uses_stream: bool = False, subsystems: tuple[str, ...] = ()) -> None:
        self.now = 1000.0
        self.counts: Counter[str] = Counter()
        self.view = TaskView(clock=lambda: self.now)
        self.connection = FakeConnection(uses_stream=uses_stream)
        self.liveness = Liveness(clock=lambda: self.now)
        self.replicas = Replicas("here", beat_s=5.0, clock=lambda: self.now)
        self.dispatcher = Dispatcher(self.view)
        self.metrics = Metrics(
            counts=self.counts,
            view=self.view,
            connection=cast(Bus, self.connection),
            liveness=self.liveness,
            replicas=self.replicas,
            subsystems=subsystems,
        )
        self.metrics.add_methods(self.dispatcher.methods)


CANONICAL = {m.name for m in Dispatcher(TaskView()).methods.values()}


def test_every_label_set_is_scraped_at_zero_before_anything_happens() -> None:
    parts = Parts(subsystems=("bus-tasks-test",))
    scraped = samples(parts.metrics)

    assert {
        o: value(scraped, "bus_tasks_events_total", outcome=o)
        for o in labels_of(scraped, "bus_tasks_events_total", "outcome")
    } == {"applied": 0, "stale": 0, "cleared": 0, "dead": 0}
    assert labels_of(scraped, "bus_tasks_tasks_removed_total", "reason") == {
        "cleared",
        "expired",
        "reconciled",
    }
    assert labels_of(scraped, "bus_tasks_heartbeats_total", "outcome") == {"accepted", "rejected"}
    for name in ("forwarded", "answered", "timeouts"):
        assert labels_of(scraped, f"bus_tasks_control_{name}_total", "command") == {"stop", "revert", "retag"}
    # Calls count under canonical names only: an alias is no series of its own.
    assert labels_of(scraped, "bus_tasks_rpc_requests_total", "method") == CANONICAL | {"unknown"}
    assert not set(ALIASES.values()) & labels_of(scraped, "bus_tasks_rpc_requests_total", "method")
    for method in CANONICAL:
        for outcome in ("ok", "error", "timeout", "internal_error"):
            assert value(scraped, "bus_tasks_rpc_requests_total", method=method, outcome=outcome) == 0
        assert value(scraped, "bus_tasks_rpc_duration_seconds_count", method=method) == 0
    assert {value(scraped, "bus_tasks_tasks", subsystem="bus-tasks-test", state=s.value) for s in State} == {
        0
    }
    for name in (
        "bus_tasks_store_commit_failures_total",
        "bus_tasks_store_commit_duration_seconds_count",
        "bus_tasks_broker_reconnects_total",
        "bus_tasks_announces_total",
        "bus_tasks_log_gaps_total",
        "bus_tasks_rpc_expired_total",
        "bus_tasks_rpc_batches_total",
        "bus_tasks_control_late_replies_total",
        "bus_tasks_control_sent_again_total",
        "bus_tasks_revision",
        "bus_tasks_tombstones",
    ):
        assert value(scraped, name) == 0, name


def test_sync_moves_each_counter_by_exactly_what_its_count_gained() -> None:
    parts = Parts()
    counts = parts.counts
    counts.update(events_applied=5, events_stale=2, events_dead=1, control_stop=1, heartbeats=3)
    parts.metrics.sync()
    parts.metrics.sync()  # nothing new: nothing moves
    scraped = samples(parts.metrics)
    assert value(scraped, "bus_tasks_events_total", outcome="applied") == 5
    assert value(scraped, "bus_tasks_events_total", outcome="stale") == 2
    assert value(scraped, "bus_tasks_events_total", outcome="dead") == 1
    assert value(scraped, "bus_tasks_control_forwarded_total", command="stop") == 1
    assert value(scraped, "bus_tasks_heartbeats_total", outcome="accepted") == 3

    counts.update(events_applied=7, events_reconciled=4, expired=2, control_timeouts_revert=1)
    parts.connection.reconnects = 2
    parts.metrics.sync()
    scraped = samples(parts.metrics)
    assert value(scraped, "bus_tasks_events_total", outcome="applied") == 12
    assert value(scraped, "bus_tasks_tasks_removed_total", reason="reconciled") == 4
    assert value(scraped, "bus_tasks_tasks_removed_total", reason="expired") == 2
    assert value(scraped, "bus_tasks_control_timeouts_total", command="revert") == 1
    assert value(scraped, "bus_tasks_broker_reconnects_total") == 2


def test_tick_syncs_only_once_every_s_passed_since_the_last_sync() -> None:
    parts = Parts()

    def metrics(every_s: float) -> Metrics:
        return Metrics(
            counts=parts.counts,
            view=parts.view,
            connection=cast(Bus, parts.connection),
            liveness=parts.liveness,
            replicas=parts.replicas,
            every_s=every_s,
        )

    hourly, always = metrics(3600.0), metrics(0.0)
    parts.counts["events_applied"] = 1
    hourly.tick()
    always.tick()
    assert value(samples(hourly), "bus_tasks_events_total", outcome="applied") == 0
    assert value(samples(always), "bus_tasks_events_total", outcome="applied") == 1
    parts.counts["events_applied"] = 3
    hourly.sync()
    assert value(samples(hourly), "bus_tasks_events_total", outcome="applied") == 3


def test_tasks_gauge_follows_each_task_through_its_states_and_out_of_the_view() -> None:
    parts = Parts()
    view, metrics = parts.view, parts.metrics

    def tasks(subsystem: str, state: State) -> float:
        metrics.sync()
        return value(samples(metrics), "bus_tasks_tasks", subsystem=subsystem, state=state.value)

    view.apply(make_event(1, seq=1, state=State.RUNNING))
    view.apply(make_event(2, seq=1, state=State.RUNNING))
    view.apply(make_event(3, seq=1, state=State.QUEUED, subsystem="gluster"))
    assert tasks("vdsm", State.RUNNING) == 2
    assert tasks("gluster", State.QUEUED) == 1
    assert tasks("gluster", State.FAILED) == 0  # a subsystem's every state, once it shows up

    view.apply(make_event(1, seq=2, state=State.FINISHED))
    view.apply(make_event(1, seq=1, state=State.RUNNING))  # stale: nothing moves
    view.apply(make_event(2, seq=2, state=State.RUNNING, progress=50))  # same state, newer
    assert (tasks("vdsm", State.RUNNING), tasks("vdsm", State.FINISHED)) == (1, 1)

    view.clear(task_id(1))
    view.apply(make_event(2, seq=3, event="cleared", state=State.RUNNING))
    assert (tasks("vdsm", State.RUNNING), tasks("vdsm", State.FINISHED)) == (0, 0)
    view.reconcile(
        Announced(
            schema_version=SCHEMA_VERSION, event="announced", seq=9, subsystem="gluster", tasks=frozenset()
        )
    )
    assert tasks("gluster", State.QUEUED) == 0
    assert value(samples(metrics), "bus_tasks_tombstones") == 3


def test_a_subsystem_heard_but_without_tasks_has_its_series_at_zero() -> None:
    parts = Parts()
    parts.liveness.beat(
        Heartbeat(
            schema_version=SCHEMA_VERSION,
            event="heartbeat",
            subsystem="gluster",
            instance="i1",
            interval_s=5.0,
            sent_at=datetime(2024, 5, 1, tzinfo=UTC),
        )
    )
    assert "gluster" not in labels_of(samples(parts.metrics), "bus_tasks_tasks", "subsystem")
    parts.metrics.sync()
    scraped = samples(parts.metrics)
    assert {value(scraped, "bus_tasks_tasks", subsystem="gluster", state=s.value) for s in State} == {0}


_operations = st.lists(
    st.tuples(
        st.sampled_from(["apply", "clear", "expire", "restore", "tombstone"]),
        st.integers(min_value=1, max_value=6),  # task
        st.integers(min_value=1, max_value=5),  # seq
        st.sampled_from([State.RUNNING, State.QUEUED, State.FINISHED, State.FAILED]),
    ),
    max_size=40,
)


@given(_operations)
def test_tasks_by_state_always_equals_a_count_of_the_live_entries(
    operations: list[tuple[str, int, int, State]],
) -> None:
    view = TaskView(clock=lambda: 10_000.0)
    for operation, n, seq, state in operations:
        subsystem = "gluster" if n % 2 else "vdsm"
        if operation == "apply":
            view.apply(make_event(n, seq=seq, state=state, subsystem=subsystem))
        elif operation == "clear" and task_id(n) in view and view.get(task_id(n)).state.is_done:
            view.clear(task_id(n))
        elif operation == "expire":
            view.expire(tombstone_ttl_s=1e9, done_ttl_s=0.0)
        elif operation == "restore":
            view.restore(entry_of(make_record(n, state=state, subsystem=subsystem), seq))
        elif operation == "tombstone":
            view.restore_tombstone(task_id(n), Tombstone(subsystem=subsystem, seq=seq, cleared_at=1.0))
    scanned = Counter((e.subsystem, e.state) for e in view)
    assert {k: v for k, v in view.tasks_by_state.items() if v} == dict(scanned)


def test_calls_count_under_their_canonical_name_by_outcome_with_their_duration() -> None:
    parts = Parts()
    parts.view.apply(Event(event="updated", seq=1, task=make_record(1)))
    dispatcher = Dispatcher(parts.view, policy=parts.metrics)

    def call(method: str, **params: str) -> None:
        dispatcher.handle(request(method, **params))

    call("Host.getAllTasks")
    call("getAllTasks")  # the alias
    call("Task.getStatus", taskID=task_id(1))
    call("Task.getStatus", taskID=task_id(99))  # 401
    call("Task.stop", taskID=task_id(1))  # forwarded: the relay tells, once answered
    call("No.suchMethod")
    dispatcher.handle(b"not json")
    scraped = samples(parts.metrics)

    def requests(method: str, outcome: str) -> float:
        return value(scraped, "bus_tasks_rpc_requests_total", method=method, outcome=outcome)

    assert requests("Host.getAllTasks", "ok") == 2
    assert (requests("Task.getStatus", "ok"), requests("Task.getStatus", "error")) == (1, 1)
    assert requests("Task.stop", "ok") + requests("Task.stop", "error") == 0
    assert requests("unknown", "error") == 2
    assert value(scraped, "bus_tasks_rpc_duration_seconds_count", method="Host.getAllTasks") == 2
    assert value(scraped, "bus_tasks_rpc_duration_seconds_count", method="Task.stop") == 0
    assert 0 < value(scraped, "bus_tasks_rpc_duration_seconds_sum", method="Host.getAllTasks") < 1.0


def test_a_method_that_crashes_counts_as_internal_error() -> None:
    parts = Parts()
    parts.view.apply(Event(event="updated", seq=1, task=make_record(1, state=State.FINISHED)))

    def crash(entry: object) -> None:
        raise RuntimeError("boom")

    dispatcher = Dispatcher(parts.view, on_clear=crash, policy=parts.metrics)
    dispatcher.handle(request("clearTask", taskID=task_id(1)))
    scraped = samples(parts.metrics)
    assert value(scraped, "bus_tasks_rpc_requests_total", method="Task.clear", outcome="internal_error") == 1


def test_store_commits_observe_their_duration_and_failures_count_apart() -> None:
    metrics = Parts().metrics
    metrics.store_committed(0.002, True)
    metrics.store_committed(0.030, True)
    metrics.store_committed(1.5, False)
    scraped = samples(metrics)
    assert value(scraped, "bus_tasks_store_commit_duration_seconds_count") == 2
    assert abs(value(scraped, "bus_tasks_store_commit_duration_seconds_sum") - 0.032) < 1e-9
    assert value(scraped, "bus_tasks_store_commit_duration_seconds_bucket", le="0.005") == 1
    assert value(scraped, "bus_tasks_store_commit_failures_total") == 1


def _beat_of(parts: Parts, name: str, revision: int) -> Replicas:
    """Another replica, heard once by this one's."""
    other = Replicas(name, beat_s=5.0, clock=lambda: parts.now)
    parts.replicas.hear(other.beat(revision=revision, tasks=0))
    return other


def test_replica_lag_is_this_revision_minus_each_serving_replicas_on_a_shared_log() -> None:
    parts = Parts(uses_stream=True)
    parts.view.revision = 100
    _beat_of(parts, "east", 90)
    west = _beat_of(parts, "west", 104)
    parts.metrics.sync()
    scraped = samples(parts.metrics)
    assert labels_of(scraped, "bus_tasks_replica_lag", "replica") == {"east", "west"}
    assert value(scraped, "bus_tasks_replica_lag", replica="east") == 10
    assert value(scraped, "bus_tasks_replica_lag", replica="west") == -4
    assert value(scraped, "bus_tasks_revision") == 100

    parts.replicas.hear(west.beat(revision=110, tasks=0, stopped=True))
    parts.metrics.sync()
    assert labels_of(samples(parts.metrics), "bus_tasks_replica_lag", "replica") == {"east"}
    parts.now += 15.0  # east silent for three of its intervals: no longer serving
    parts.metrics.sync()
    assert labels_of(samples(parts.metrics), "bus_tasks_replica_lag", "replica") == set()


def test_replica_lag_is_not_exported_when_each_replica_counts_its_own_deliveries() -> None:
    parts = Parts(uses_stream=False)
    _beat_of(parts, "east", 90)
    parts.metrics.sync()
    assert labels_of(samples(parts.metrics), "bus_tasks_replica_lag", "replica") == set()


def test_each_aggregator_has_a_registry_of_its_own_and_the_default_one_is_untouched() -> None:
    first, second = Parts(), Parts()
    first.counts["events_applied"] = 4
    first.metrics.sync()
    second.metrics.sync()
    assert value(samples(first.metrics), "bus_tasks_events_total", outcome="applied") == 4
    assert value(samples(second.metrics), "bus_tasks_events_total", outcome="applied") == 0
    assert REGISTRY.get_sample_value("bus_tasks_events_total", {"outcome": "applied"}) is None


def test_scrapes_from_another_thread_while_the_loop_applies_and_syncs_never_fail() -> None:
    parts = Parts()
    errors: list[BaseException] = []
    done = threading.Event()

    def scrape() -> None:
        try:
            while not done.is_set():
                samples(parts.metrics)
        except BaseException as exc:
            errors.append(exc)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for n in range(1, 3001):
            parts.view.apply(make_event(n, seq=1, subsystem=f"s{n % 50}"))
            parts.counts["events_applied"] += 1
            if n % 100 == 0:
                parts.metrics.sync()
    finally:
        done.set()
        scraper.join(10.0)
    assert errors == []
    parts.metrics.sync()
    scraped = samples(parts.metrics)
    assert value(scraped, "bus_tasks_events_total", outcome="applied") == 3000
    assert (
        sum(value(scraped, "bus_tasks_tasks", subsystem=f"s{i}", state="running") for i in range(50)) == 3000
    )


def test_a_subsystem_long_gone_without_tasks_leaves_the_scrape_and_comes_back_when_heard() -> None:
    parts = Parts(subsystems=("bus-tasks-test",))

    def beat() -> None:
        parts.liveness.beat(
            Heartbeat(
                schema_version=SCHEMA_VERSION,
                event="heartbeat",
                subsystem="gluster",
                instance="i1",
                interval_s=5.0,
                sent_at=datetime(2024, 5, 1, tzinfo=UTC),
            )
        )

    beat()
    parts.metrics.sync()
    assert labels_of(samples(parts.metrics), "bus_tasks_tasks", "subsystem") == {"gluster", "bus-tasks-test"}
    parts.now += 60.0  # twelve beats missed, and it never had a task
    parts.metrics.sync()
    assert labels_of(samples(parts.metrics), "bus_tasks_tasks", "subsystem") == {"bus-tasks-test"}
    beat()
    parts.metrics.sync()
    assert labels_of(samples(parts.metrics), "bus_tasks_tasks", "subsystem") == {"gluster", "bus-tasks-test"}
