"""Several aggregators on one broker, in process: on RabbitMQ's stream each sees every event and
no warning is due; on Redis (the fallback, a queue per named aggregator) likewise; two of the
same name on one queue would split the events, and the second says so when it starts."""

from __future__ import annotations

import logging
import time

import pytest
from support.brokers import Broker, System, SystemFactory, rabbitmqctl

from bus_tasks import names
from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.core.model import State
from bus_tasks.errors import SubsystemTaken, TopologyMismatch
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until
from bus_tasks.transport import TopologyOptions, topology
from bus_tasks.transport.kombu import entities

pytestmark = pytest.mark.integration

TASKS = 50
CLEAR_WITHIN_S = 2.0


def warnings_about_another_aggregator(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("bus_tasks.aggregator")
        and r.levelno == logging.WARNING
        and "another aggregator" in r.getMessage()
        and "already reads" in r.getMessage()  # not presence's "serves as" (the name's own warning)
    ]


def replicas(broker: Broker, start_system: SystemFactory, *, stream: bool) -> tuple[System, System]:
    """Two aggregators on ``broker``: readers of the stream, or named ones with queues of their own."""
    started = []
    for name in ("a", "b"):
        options = TopologyOptions(event_log="stream" if stream else "queue", replica="" if stream else name)
        started.append(start_system(broker, options=options, policy=AggregatorPolicy(name=name)))
    return started[0], started[1]


@pytest.mark.parametrize("transport", ["rabbitmq", "redis"])
def test_every_replica_sees_every_event_and_a_clear_by_one_leaves_the_others_within_2_s(
    transport: str,
    rabbitmq_broker: Broker,
    redis_broker: Broker,
    start_system: SystemFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bus_tasks.aggregator")
    broker = rabbitmq_broker if transport == "rabbitmq" else redis_broker
    a, b = replicas(broker, start_system, stream=transport == "rabbitmq")
    pub = a.publisher("vdsm")
    tasks = [pub.create("copyImage", ["spm"], state=State.FINISHED).id for _ in range(TASKS)]

    for system in (a, b):
        wait_until(
            lambda s=system: all(t in s.aggregator.view for t in tasks),  # type: ignore[misc]
            timeout_s=10,
            what="every event in both views",
        )
    assert warnings_about_another_aggregator(caplog) == []

    assert a.client().clear_task(tasks[0]) is True  # through the shared queue: either answers
    cleared_at = time.monotonic()
    wait_until(
        lambda: all(tasks[0] not in s.aggregator.view for s in (a, b)),
        timeout_s=10,
        interval_s=0.02,
        what="the clear applied by both",
    )
    assert time.monotonic() - cleared_at < CLEAR_WITHIN_S
    if transport == "rabbitmq":  # one log: one revision once quiet
        wait_until(
            lambda: a.aggregator.view.revision == b.aggregator.view.revision,
            timeout_s=10,
            what="one revision",
        )
        assert a.aggregator.view.revision >= TASKS + 1


def test_two_aggregators_of_one_name_on_one_events_queue_warn_that_the_events_would_be_split(
    rabbitmq_broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bus_tasks.aggregator")
    queue_mode = TopologyOptions(event_log="queue")
    start_system(rabbitmq_broker, options=queue_mode)
    assert warnings_about_another_aggregator(caplog) == []

    start_system(rabbitmq_broker, options=queue_mode)

    [warning] = warnings_about_another_aggregator(caplog)
    assert warning.startswith(f"another aggregator (1 consumer(s)) already reads {names.EVENTS_QUEUE} on ")
    assert warning.endswith(
        ": give each aggregator a name of its own (aggregator_name), or both views will miss events"
    )
    assert "guest:guest" not in warning


def queue_types(broker: Broker) -> dict[str, str]:
    vhost = broker.url.rsplit("/", 1)[1]
    listed = rabbitmqctl("list_queues", "-p", vhost, "name", "type", "--no-table-headers")
    return dict(line.split("\t")[:2] for line in listed.splitlines() if "\t" in line)


def test_with_queue_type_quorum_the_rpc_queue_is_replicated_and_requests_and_commands_are_served(
    rabbitmq_broker: Broker, start_system: SystemFactory
) -> None:
    quorum = TopologyOptions(queue_type="quorum")
    system = start_system(rabbitmq_broker, options=quorum)
    pub = TaskPublisher(rabbitmq_broker.connection(options=quorum), "vdsm")

    def abort(task_id: str) -> None:
        pub.fail(task_id, code=411, message="Task is aborted")

    pub.on_stop(abort)
    task = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    system.serve(pub, rabbitmq_broker.connection(options=quorum))
    client = system.client()
    wait_until(lambda: task in client.get_all_tasks(), timeout_s=10, what="task listed")

    assert client.stop_task(task) is True  # the request came through the quorum RPC queue
    wait_until(lambda: client.get_task_status(task)["code"] == 411, timeout_s=10, what="stopped")
    types = queue_types(rabbitmq_broker)
    # Control queues are replicated too (SPEC 17), and still have one owner per name: the claim.
    assert (types[names.RPC_QUEUE], types[names.control_queue("vdsm")]) == ("quorum", "quorum")
    assert types[names.EVENT_LOG] == "stream"
    rival = TaskPublisher(rabbitmq_broker.connection(options=quorum), "vdsm")
    with pytest.raises(SubsystemTaken):
        rival.control.listen(rabbitmq_broker.connection(options=quorum))


def test_a_control_queue_that_exists_unbound_yet_is_bound_by_who_adopts_it_so_no_command_is_lost(
    rabbitmq_broker: Broker,
) -> None:
    # Its subsystem declared it a moment ago and has not bound it yet (a quorum queue's declare
    # is slow): an aggregator adopting it then publishing a command must not route it to nowhere.
    quorum = TopologyOptions(queue_type="quorum")
    subsystem = rabbitmq_broker.connection(options=quorum)
    queue = entities.queue(topology.control_queue("vdsm", "quorum"))
    subsystem.connect()
    queue.bind(subsystem.link.channel).queue_declare()  # type: ignore[attr-defined,no-untyped-call]  # not bound
    aggregator = rabbitmq_broker.connection(options=quorum)
    aggregator.topology.declare_control_queue("vdsm")
    aggregator.publish(b'{"command": 1}', exchange=names.CONTROL_EXCHANGE, routing_key="vdsm")
    aggregator.flush(10.0)
    admin = aggregator.admin()  # type: ignore[attr-defined]
    wait_until(lambda: admin.queue_size(names.control_queue("vdsm")) == 1, timeout_s=10, what="routed")


def test_a_classic_rpc_queue_refuses_a_quorum_configuration_with_one_clear_error(
    rabbitmq_broker: Broker, start_system: SystemFactory
) -> None:
    start_system(rabbitmq_broker)  # declares bus_tasks.rpc as a classic queue
    connection = rabbitmq_broker.connection(options=TopologyOptions(queue_type="quorum"))

    with pytest.raises(TopologyMismatch) as caught:
        connection.topology.declare_topology()

    assert caught.value.message.startswith(
        "General Exception: queue bus_tasks.rpc exists with other arguments than this configuration declares"
    )
    assert "x-queue-type" in caught.value.message
    assert "rabbitmqctl delete_queue bus_tasks.rpc" in caught.value.message
