"""identity = "broker" on RabbitMQ: the aggregator believes an event or a heartbeat only when the
user_id the broker validated may say it (SPEC 15); the rest is dead-lettered, counted, and the
view does not change. Every connection here logs in as guest, so guest is the identity
allowed to speak for vdsm and no other subsystem."""

from __future__ import annotations

from pathlib import Path

import amqp
import pytest
from support.brokers import Broker, SystemFactory, admin_of
from support.cli_helpers import BusTasksProcess
from support.factories import make_event

from bus_tasks import names
from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.errors import TopologyMissing
from bus_tasks.identity import TrustPolicy
from bus_tasks.testing import wait_until
from bus_tasks.transport import Delivery, TopologyOptions

pytestmark = pytest.mark.integration

TIMEOUT_S = 20.0
TRUST = TrustPolicy.of("broker", publishers={"vdsm": ["guest"]}, aggregators=["guest"])


def dead_letters(broker: Broker, count: int) -> list[Delivery]:
    conn = broker.connection()
    letters: list[Delivery] = []

    def fetch() -> bool:
        while len(letters) < count and (letter := admin_of(conn).get(names.DEAD_QUEUE)) is not None:
            letter.ack()
            letters.append(letter)
        return len(letters) == count

    wait_until(fetch, timeout_s=TIMEOUT_S, what=f"{count} dead letters")
    return letters


def test_only_the_identities_of_a_subsystem_publish_its_tasks(
    rabbitmq_broker: Broker, start_system: SystemFactory
) -> None:
    system = start_system(rabbitmq_broker, policy=AggregatorPolicy(trust=TRUST, test_subsystem=""))
    view = system.aggregator.view
    vdsm = system.publisher("vdsm")
    gluster = system.publisher("gluster")
    forged = gluster.create("rebalance", ["gluster"])
    gluster.flush(TIMEOUT_S)
    task = vdsm.create("copyImage", ["spm"])
    vdsm.flush(TIMEOUT_S)
    wait_until(lambda: task.id in view, timeout_s=TIMEOUT_S, what="vdsm's task applied")
    (letter,) = dead_letters(rabbitmq_broker, 1)
    assert letter.headers[names.HEADER_REASON] == "identity: 'guest' may not speak for gluster (event)"
    assert forged.id not in view
    assert system.aggregator.counts["events_refused_identity"] == 1


def test_an_event_without_user_id_is_dead_lettered(
    rabbitmq_broker: Broker, start_system: SystemFactory
) -> None:
    system = start_system(rabbitmq_broker, policy=AggregatorPolicy(trust=TRUST, test_subsystem=""))
    vhost = rabbitmq_broker.url.rsplit("/", 1)[1]
    event = make_event(7, event="created")
    with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest", virtual_host=vhost) as raw:
        raw.connect()
        channel = raw.channel()
        channel.confirm_select()
        message = amqp.Message(event.model_dump_json(by_alias=True).encode(), content_type=names.CONTENT_TYPE)
        channel.basic_publish(
            message,
            exchange=names.EVENTS_EXCHANGE,
            routing_key="task.vdsm.created",
            confirm_timeout=TIMEOUT_S,
        )
    (letter,) = dead_letters(rabbitmq_broker, 1)
    assert letter.headers[names.HEADER_REASON] == (
        "identity: no user_id on a message (event of vdsm): nobody vouches for its sender"
    )
    assert event.task.id not in system.aggregator.view


def test_only_a_subsystems_identities_make_it_alive(
    rabbitmq_broker: Broker, start_system: SystemFactory
) -> None:
    system = start_system(rabbitmq_broker, policy=AggregatorPolicy(trust=TRUST, test_subsystem=""))
    for name in ("gluster", "vdsm"):
        pub = system.publisher(name)
        pub.heartbeat_s = 0.2
        system.serve(pub)
    liveness = system.aggregator.liveness
    wait_until(lambda: "vdsm" in liveness.seen, timeout_s=TIMEOUT_S, what="vdsm seen alive")
    wait_until(
        lambda: system.aggregator.counts["heartbeats_refused_identity"] >= 1,
        timeout_s=TIMEOUT_S,
        what="gluster's heartbeat refused",
    )
    assert "gluster" not in liveness.seen


def test_with_identity_off_everyone_is_believed(rabbitmq_broker: Broker, start_system: SystemFactory) -> None:
    system = start_system(rabbitmq_broker, policy=AggregatorPolicy(test_subsystem=""))
    gluster = system.publisher("gluster")
    task = gluster.create("rebalance", ["gluster"])
    gluster.flush(TIMEOUT_S)
    wait_until(lambda: task.id in system.aggregator.view, timeout_s=TIMEOUT_S, what="gluster's task applied")
    assert system.aggregator.counts["events_refused_identity"] == 0


def test_a_predeclared_topology_that_is_missing_says_to_import_it(rabbitmq_broker: Broker) -> None:
    connection = rabbitmq_broker.connection(options=TopologyOptions(predeclared=True))
    with pytest.raises(TopologyMissing) as caught:
        connection.topology.declare_queue(names.RPC_QUEUE)
    assert caught.value.message == (
        'Topology missing: queue bus_tasks.rpc does not exist on the broker; with identity = "broker" the'
        " topology is declared beforehand: import the output of bus-tasks broker-setup"
    )
    assert admin_of(connection).queue_exists(names.RPC_QUEUE) is False  # checked, not declared


@pytest.mark.parametrize("command", [("simulate", "storage"), ("serve", "--data-dir", "data")])
def test_a_process_with_identity_off_says_so_once_at_start(
    rabbitmq_broker: Broker, tmp_path: Path, command: tuple[str, ...]
) -> None:
    process = BusTasksProcess(*command, "--broker", rabbitmq_broker.url, cwd=tmp_path)
    try:
        process.wait_for_line(
            'identity = "off": any user of the broker can publish as any subsystem', timeout_s=TIMEOUT_S
        )
    finally:
        process.terminate()
    assert sum('identity = "off"' in line for line in process.lines) == 1
