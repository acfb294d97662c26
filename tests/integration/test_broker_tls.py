"""TLS to the broker with certificate login (SPEC 15), on a RabbitMQ node of the test's own with
a TLS listener and rabbitmq_auth_mechanism_ssl: the wiring every process uses connects by
certificate, stamps the user the broker knows it by on what it publishes, and a receiver sees it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from support.own_rabbit import OwnRabbit
from support.tls_rabbit import TlsRabbit, start_tls_rabbit

from bus_tasks import names
from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.errors import BrokerRefused
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.transport import Delivery
from bus_tasks.transport.kombu import BusConnection
from bus_tasks.workers import wiring

pytestmark = pytest.mark.integration

VHOST = "tls"
USER = "bus-tasks-tls"  # a user with every permission on the vhost, logging in by certificate
TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRabbit]:
    for rabbit in start_tls_rabbit(tmp_path_factory, VHOST):
        rabbit.node.ctl("add_vhost", VHOST)
        rabbit.node.ctl("add_user", USER, "unused-password")
        rabbit.node.ctl("clear_password", USER)  # certificate login only
        rabbit.node.ctl("set_permissions", "-p", VHOST, USER, ".*", ".*", ".*")
        yield rabbit


def test_every_process_connects_by_certificate_and_the_whole_path_works(tls_node: TlsRabbit) -> None:
    settings = tls_node.settings(USER, test_subsystem="")
    bus = wiring.connect(settings)
    assert isinstance(bus, BusConnection)  # the kombu bus stamps its login's user on publishes
    assert bus.user_id == USER
    bus.close()
    aggregator = Aggregator(
        wiring.connect(settings, confirm_publish=True), policy=wiring.aggregator_policy(settings)
    )
    with RunningAggregator(aggregator, ready_timeout_s=TIMEOUT_S):
        with wiring.connect(settings, confirm_publish=True) as connection:
            publisher = TaskPublisher(connection, "vdsm")
            task = publisher.create("copyImage", ["spm"])
            publisher.flush(TIMEOUT_S)
        with TasksClient(wiring.connect(settings), timeout_s=TIMEOUT_S) as client:
            wait_until(
                lambda: task.id in client.get_all_tasks(), timeout_s=TIMEOUT_S, what="task listed over TLS"
            )
            assert client.get_task_details(task.id)["subsystem"] == "vdsm"


def test_a_publish_carries_the_user_the_broker_knows_the_sender_by(tls_node: TlsRabbit) -> None:
    settings = tls_node.settings(USER)
    seen: list[Delivery] = []
    with wiring.connect(settings, confirm_publish=True) as connection:
        queue = connection.topology.declare_reply_queue(names.REPLY_QUEUE_PREFIX)
        connection.consume(queue, seen.append, no_ack=True)
        connection.publish(b"{}", routing_key=queue, persistent=False)
        connection.flush(TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        while not seen:
            assert time.monotonic() < deadline, "the message did not come back"
            connection.drain(0.2)
    assert [d.user_id for d in seen] == [USER]


def test_a_certificate_of_an_unknown_user_is_refused_for_good(tls_node: TlsRabbit) -> None:
    settings = tls_node.settings("nobody-here")
    with pytest.raises(BrokerRefused), wiring.connect(settings) as connection:
        connection.connect()


def test_a_certificate_of_another_ca_is_refused(tls_node: TlsRabbit) -> None:
    paths = tls_node.client_files(USER, ca=trustme.CA())
    settings = tls_node.settings(USER).with_overrides(
        broker_ssl_cert=paths["cert"], broker_ssl_key=paths["key"]
    )
    connection = wiring.connect(settings, connect_retries=1)
    with pytest.raises(connection.errors):
        connection.connect()
    connection.close()


def test_a_broker_whose_certificate_our_ca_did_not_sign_is_refused(tls_node: TlsRabbit) -> None:
    other = tls_node.files / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)
    settings = tls_node.settings(USER).with_overrides(broker_ssl_ca=other)
    connection = wiring.connect(settings, connect_retries=1)
    with pytest.raises(connection.errors):
        connection.connect()
    connection.close()


def test_no_log_line_names_a_key_file(tls_node: TlsRabbit, caplog: pytest.LogCaptureFixture) -> None:
    settings = tls_node.settings(USER)
    with caplog.at_level("DEBUG"), wiring.connect(settings) as connection:
        connection.connect()
        assert str(settings.broker_ssl_key) not in repr(connection)
    key_dir = str(Path(str(settings.broker_ssl_key)).parent)
    assert not [r.getMessage() for r in caplog.records if key_dir in r.getMessage()]


def test_rabbitmqctl_sees_the_connection_logged_in_by_certificate(tls_node: TlsRabbit) -> None:
    settings = tls_node.settings(USER)
    with wiring.connect(settings) as connection:
        connection.connect()
        listed = subprocess_lines(tls_node.node, "list_connections", "user", "auth_mechanism", "ssl")
    assert (USER, "EXTERNAL", "true") in listed


def subprocess_lines(node: OwnRabbit, *args: str) -> set[tuple[str, ...]]:
    try:
        output = node.ctl(*args, "-s")
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"rabbitmqctl {' '.join(args)}: {exc.stderr}")
    return {tuple(line.split("\t")) for line in output.splitlines()}
