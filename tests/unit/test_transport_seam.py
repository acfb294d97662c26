"""The transport seam: open() picks the transport by URL; the topology is neutral specs on declare()."""

from __future__ import annotations

import pytest

from bus_tasks import names, transport
from bus_tasks.transport import BusOptions, Topology, TopologyOptions, wakeup_handle
from bus_tasks.transport.kombu import BusConnection, entities
from bus_tasks.transport.topology import Binding, QueueSpec, Spec


class RecordingBus:
    """A declarer that remembers what the topology asked of it."""

    def __init__(self, *, replays: bool) -> None:
        self.replays = replays
        self.declared: list[Spec] = []

    def declare(self, *specs: Spec) -> None:
        self.declared.extend(specs)

    def queues(self) -> list[QueueSpec]:
        return [spec for spec in self.declared if isinstance(spec, QueueSpec)]


@pytest.mark.parametrize(
    "url",
    ["memory://", "amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:6379/0", "AMQPS://h//"],
)
def test_open_builds_the_kombu_bus_for_its_schemes_without_connecting(url: str) -> None:
    bus = transport.open(url, BusOptions(connect_retries=0))
    assert isinstance(bus, BusConnection)
    assert bus.url == url
    assert wakeup_handle(bus) is None  # not connected: nothing to wait on yet


def test_open_refuses_a_scheme_no_transport_serves_and_names_the_known_ones_without_the_secret() -> None:
    with pytest.raises(ValueError, match="no transport for") as caught:
        transport.open("nats://user:s3cret@127.0.0.1:4222")
    assert "s3cret" not in str(caught.value)
    assert "amqp, amqps, memory, pyamqp, redis, rediss" in str(caught.value)


def test_the_bus_options_reach_the_topology_of_the_bus() -> None:
    layout = TopologyOptions(event_log="queue", replica="east")
    bus = transport.open("memory://", BusOptions(topology=layout))
    assert bus.topology.options == layout
    assert bus.topology.events_source == names.events_queue("east")


def test_admin_finds_the_admin_of_a_bus_and_none_for_a_bus_without_one() -> None:
    bus = transport.open("memory://")
    admin = transport.admin(bus)
    assert admin is not None
    assert admin.queue_exists(names.RPC_QUEUE) is None  # memory:// keeps no record of queues
    assert admin.consumer_count(names.RPC_QUEUE) is None
    bus.close()
    assert transport.admin(RecordingBus(replays=False)) is None  # type: ignore[arg-type]


def test_on_a_bus_that_replays_the_aggregator_reads_the_stream_and_declares_it_as_a_log() -> None:
    bus = RecordingBus(replays=True)
    topology = Topology(bus, TopologyOptions(log_max_age="1D", log_max_bytes=1000, queue_type="quorum"))
    topology.declare_topology()
    assert topology.uses_stream
    assert topology.events_source == names.EVENT_LOG
    [log, rpc, dead] = bus.queues()
    assert log == QueueSpec(
        names.EVENT_LOG,
        (Binding(topology_exchange(names.EVENTS_EXCHANGE), names.EVENTS_BINDING),),
        log=True,
        log_max_age="1D",
        log_max_bytes=1000,
        adopt=True,
    )
    assert (rpc.name, rpc.replicated, dead.name, dead.replicated) == (
        names.RPC_QUEUE,
        True,
        names.DEAD_QUEUE,
        True,  # a durable classic queue on a node that is down cannot be declared again elsewhere
    )


def test_on_a_bus_that_does_not_replay_each_aggregator_has_an_events_queue_of_its_name() -> None:
    bus = RecordingBus(replays=False)
    topology = Topology(bus, TopologyOptions(event_log="stream", replica="west"))
    topology.declare_events()
    assert not topology.uses_stream
    [queue] = bus.queues()
    assert (queue.name, queue.log, queue.durable) == (names.events_queue("west"), False, True)


def test_a_control_queue_is_adopted_when_present_and_bound_to_its_subsystem_and_to_all() -> None:
    bus = RecordingBus(replays=True)
    assert Topology(bus).declare_control_queue("vdsm") == names.control_queue("vdsm")
    [queue] = bus.queues()
    assert queue.adopt
    assert queue.durable
    assert not queue.replicated
    assert [b.pattern for b in queue.bindings] == ["vdsm", names.CONTROL_BROADCAST]


def test_with_queue_type_quorum_a_control_queue_is_replicated_by_name_too() -> None:
    # SPEC 17: a classic one whose node is down would hold up its subsystem and the aggregators.
    bus = RecordingBus(replays=True)
    options = TopologyOptions(queue_type="quorum")
    Topology(bus, options).declare_control_queue("vdsm")
    [queue] = bus.queues()
    assert (queue.replicated, queue.adopt, queue.durable) == (True, True, True)
    assert transport.topology.well_known(names.control_queue("vdsm"), options) == queue
    assert not transport.topology.well_known(names.control_queue("vdsm")).replicated
    control = entities.queue(queue)
    assert vars(control)["queue_arguments"] == {"x-queue-type": "quorum"}


def test_reply_queues_are_private_temporary_and_new_each_time() -> None:
    bus = RecordingBus(replays=False)
    first = Topology(bus).declare_reply_queue("bus_tasks.reply.")
    second = Topology(bus).declare_reply_queue("bus_tasks.reply.")
    assert first != second
    assert first.startswith("bus_tasks.reply.")
    assert all(q.private and q.temporary and not q.durable for q in bus.queues())


def test_the_kombu_entities_of_the_specs_carry_the_arguments_rabbitmq_keeps() -> None:
    log = entities.queue(transport.topology.event_log(TopologyOptions(log_max_age="2D", log_max_bytes=10)))
    assert vars(log)["queue_arguments"] == {
        "x-queue-type": "stream",
        "x-max-age": "2D",
        "x-max-length-bytes": 10,
    }
    assert (log.exchange.name, log.routing_key, log.durable) == (
        names.EVENTS_EXCHANGE,
        names.EVENTS_BINDING,
        True,
    )
    rpc = entities.queue(transport.topology.rpc_queue("quorum"))
    assert vars(rpc)["queue_arguments"] == {"x-queue-type": "quorum"}
    assert (rpc.exchange.name, rpc.routing_key) == ("", names.RPC_QUEUE)
    control = entities.queue(transport.topology.control_queue("vdsm"))
    assert {(b.exchange.name, b.routing_key) for b in control.bindings} == {
        (names.CONTROL_EXCHANGE, "vdsm"),
        (names.CONTROL_EXCHANGE, names.CONTROL_BROADCAST),
    }
    reply = entities.queue(transport.topology.reply_queue("r."))
    assert (reply.exclusive, reply.auto_delete, reply.durable) == (True, True, False)


def topology_exchange(name: str) -> transport.topology.ExchangeSpec:
    return transport.topology.EXCHANGES[name]
