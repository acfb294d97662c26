"""The aggregator's metrics in process, on memory:// and fakeredis: each moves by what happened.

Read as a scrape reads them: ``generate_latest(aggregator.metrics.registry)``, parsed.
"""

from __future__ import annotations

import pytest
from support.brokers import Broker, System, SystemFactory
from support.metrics import metric, scrape, wait_metric
from support.stores import SwitchableStore

from bus_tasks import names
from bus_tasks.aggregator import Aggregator
from bus_tasks.core.model import Event, State
from bus_tasks.errors import GeneralError, UnknownTask
from bus_tasks.testing import RunningAggregator, wait_until

TIMEOUT_S = 10.0
TRANSPORTS = pytest.mark.parametrize("broker", ["memory", "fakeredis"], indirect=True)


@TRANSPORTS
def test_event_metrics_move_by_exactly_the_events_published(system: System) -> None:
    aggregator = system.aggregator
    vdsm, gluster = system.publisher("vdsm"), system.publisher("gluster")
    finished = [vdsm.create("createVolume", ["spm"]).id for _ in range(6)]
    for task_id in finished:
        vdsm.finish(task_id)
    running = [gluster.create("rebalance", ["gluster"], state=State.RUNNING).id for _ in range(4)]
    gluster.update(running[0], progress=50)
    published = 6 + 6 + 4 + 1
    # An event older than what the view holds (stale), and one that is not an event (dead).
    old = Event(event="updated", seq=1, task=vdsm.get(finished[0]).model_copy(update={"state": State.INIT}))
    sender = system.broker.connection()
    sender.publish(
        old.model_dump_json(by_alias=True).encode(),
        exchange=names.EVENTS_EXCHANGE,
        routing_key=names.event_routing_key("vdsm", "updated"),
    )
    sender.publish(
        b"{not json", exchange=names.EVENTS_EXCHANGE, routing_key=names.event_routing_key("vdsm", "updated")
    )
    sender.flush()

    wait_metric(aggregator, "bus_tasks_events_total", 1, outcome="dead", timeout_s=TIMEOUT_S)
    scraped = scrape(aggregator)

    def events(outcome: str) -> float:
        return scraped["bus_tasks_events_total", frozenset({("outcome", outcome)})]

    def tasks(subsystem: str, state: State) -> float:
        return scraped["bus_tasks_tasks", frozenset({("subsystem", subsystem), ("state", state.value)})]

    assert (events("applied"), events("stale"), events("cleared"), events("dead")) == (published, 1, 0, 1)
    assert tasks("vdsm", State.FINISHED) == 6
    assert tasks("vdsm", State.INIT) == 0
    assert tasks("gluster", State.RUNNING) == 4
    assert tasks(aggregator.policy.test_subsystem, State.RUNNING) == 0  # pre-created, no tasks
    # Each delivery of this aggregator's events queue moves its revision by one.
    assert scraped["bus_tasks_revision", frozenset()] == published + 2
    assert scraped["bus_tasks_store_commit_duration_seconds_count", frozenset()] >= 1
    assert scraped["bus_tasks_store_commit_failures_total", frozenset()] == 0


@TRANSPORTS
def test_rpc_metrics_count_each_call_by_canonical_method_and_outcome(system: System) -> None:
    aggregator = system.aggregator
    task_id = system.publisher("vdsm").create("copyImage", ["spm"]).id
    client = system.client()
    wait_until(lambda: task_id in client.get_all_tasks(), timeout_s=TIMEOUT_S, what="the task listed")
    before = scrape(aggregator)[
        "bus_tasks_rpc_requests_total", frozenset({("method", "Host.getAllTasks"), ("outcome", "ok")})
    ]
    client.get_all_tasks()
    client.call("getAllTasks")  # VDSM's flat alias counts under the canonical name
    client.get_task_status(task_id)
    with pytest.raises(UnknownTask):
        client.get_task_status("00000000-0000-4000-8000-000000000000")
    outcomes = client.batch([("Task.getInfo", {"taskID": task_id}), ("Task.getInfo", {"taskID": "bad"})])
    assert len(outcomes) == 2

    def requests(method: str, outcome: str) -> float:
        return scrape(aggregator)[
            "bus_tasks_rpc_requests_total", frozenset({("method", method), ("outcome", outcome)})
        ]

    wait_until(lambda: requests("Task.getInfo", "error") == 1, timeout_s=TIMEOUT_S, what="the batch counted")
    assert requests("Host.getAllTasks", "ok") - before == 2
    assert (requests("Task.getStatus", "ok"), requests("Task.getStatus", "error")) == (1, 1)
    assert requests("Task.getInfo", "ok") == 1
    scraped = scrape(aggregator)
    assert scraped["bus_tasks_rpc_duration_seconds_count", frozenset({("method", "Task.getStatus")})] == 2
    wait_metric(aggregator, "bus_tasks_rpc_batches_total", 1, timeout_s=TIMEOUT_S)


def test_a_forwarded_stop_counts_as_forwarded_answered_and_one_call_with_its_latency(
    memory_system: System,
) -> None:
    system, aggregator = memory_system, memory_system.aggregator
    pub = system.publisher("vdsm")
    pub.on_stop(lambda task_id: None)
    system.listen(pub)
    task_id = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    client = system.client()
    wait_until(lambda: task_id in client.get_all_tasks(), timeout_s=TIMEOUT_S, what="the task listed")

    assert client.stop_task(task_id) is True

    wait_metric(aggregator, "bus_tasks_control_answered_total", 1, command="stop", timeout_s=TIMEOUT_S)
    scraped = scrape(aggregator)
    assert scraped["bus_tasks_control_forwarded_total", frozenset({("command", "stop")})] == 1
    assert scraped["bus_tasks_control_timeouts_total", frozenset({("command", "stop")})] == 0
    stop = frozenset({("method", "Task.stop")})
    assert scraped["bus_tasks_rpc_requests_total", stop | {("outcome", "ok")}] == 1
    assert scraped["bus_tasks_rpc_duration_seconds_count", stop] == 1
    assert 0 < scraped["bus_tasks_rpc_duration_seconds_sum", stop] < TIMEOUT_S


def test_a_stop_its_subsystem_never_answers_counts_as_a_timeout(memory_system: System) -> None:
    system, aggregator = memory_system, memory_system.aggregator
    task_id = system.publisher("vdsm").create("copyImage", ["spm"], state=State.RUNNING).id  # never listens
    client = system.client(timeout_s=3.0)
    wait_until(lambda: task_id in client.get_all_tasks(), timeout_s=TIMEOUT_S, what="the task listed")

    with pytest.raises(GeneralError):
        client.stop_task(task_id)

    wait_metric(aggregator, "bus_tasks_control_timeouts_total", 1, command="stop", timeout_s=TIMEOUT_S)
    scraped = scrape(aggregator)
    stop = frozenset({("method", "Task.stop")})
    assert scraped["bus_tasks_rpc_requests_total", stop | {("outcome", "timeout")}] == 1
    assert scraped["bus_tasks_control_answered_total", frozenset({("command", "stop")})] == 0
    # Answered a little before the caller's 3 s deadline, and timed from the request's arrival.
    assert 2.5 < scraped["bus_tasks_rpc_duration_seconds_sum", stop] < 3.0


@TRANSPORTS
def test_a_clear_moves_the_task_out_of_its_state_into_the_tombstones(system: System) -> None:
    aggregator = system.aggregator
    pub = system.publisher("vdsm")
    task_id = pub.create("createVolume", ["spm"], state=State.FINISHED).id
    client = system.client()
    wait_until(lambda: task_id in client.get_all_tasks(), timeout_s=TIMEOUT_S, what="the task listed")
    wait_metric(aggregator, "bus_tasks_tasks", 1, subsystem="vdsm", state="finished", timeout_s=TIMEOUT_S)

    assert client.clear_task(task_id) is True

    wait_metric(aggregator, "bus_tasks_tasks_removed_total", 1, reason="cleared", timeout_s=TIMEOUT_S)
    wait_metric(aggregator, "bus_tasks_tasks", 0, subsystem="vdsm", state="finished", timeout_s=TIMEOUT_S)
    assert metric(aggregator, "bus_tasks_tombstones") == 1


def test_store_commits_are_timed_and_every_failed_one_counted(
    memory_broker: Broker, start_system: SystemFactory
) -> None:
    store = SwitchableStore()
    system = start_system(memory_broker, store=store)
    aggregator = system.aggregator
    pub = system.publisher("vdsm")
    store.broken = True
    pub.create("copyImage", ["spm"])
    wait_until(lambda: store.failed_commits >= 2, timeout_s=TIMEOUT_S, what="commits retried")
    store.broken = False
    pub.create("copyImage", ["spm"])
    wait_metric(aggregator, "bus_tasks_events_total", 2, outcome="applied", timeout_s=TIMEOUT_S)
    wait_until(
        lambda: metric(aggregator, "bus_tasks_store_commit_duration_seconds_count") == store.commits > 0,
        timeout_s=TIMEOUT_S,
        what="every commit that worked observed",
    )
    assert metric(aggregator, "bus_tasks_store_commit_failures_total") == store.failed_commits


def test_the_last_figures_are_synced_when_the_aggregator_stops(memory_broker: Broker) -> None:
    aggregator = Aggregator(memory_broker.connection())
    aggregator.metrics.every_s = 3600.0  # no sync while it runs: only the stop's
    with RunningAggregator(aggregator):
        pub = System(memory_broker, aggregator).publisher("vdsm")
        for _ in range(20):
            pub.create("copyImage", ["spm"])
        wait_until(lambda: aggregator.counts["events_applied"] == 20, timeout_s=TIMEOUT_S, what="applied")
        assert metric(aggregator, "bus_tasks_events_total", outcome="applied") == 0
    # Stopped: what a scrape reads now is what the aggregator counted, to the last event.
    assert metric(aggregator, "bus_tasks_events_total", outcome="applied") == 20
    assert metric(aggregator, "bus_tasks_tasks", subsystem="vdsm", state="init") == 20
