"""TLS to the broker with certificate login (SPEC 15), on a RabbitMQ node of the test's own with
a TLS listener and rabbitmq_auth_mechanism_ssl: the wiring every process uses connects by
certificate, stamps the user the broker knows it by on what it publishes, and a receiver sees it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from support.brokers import CI
from support.own_rabbit import OwnRabbit, available

from bus_tasks import names
from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.config import Settings, load_settings
from bus_tasks.errors import BrokerRefused
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.transport import Delivery
from workers import wiring

pytestmark = pytest.mark.integration

VHOST = "tls"
USER = "bus-tasks-tls"  # a user with every permission on the vhost, logging in by certificate
TIMEOUT_S = 20.0

TLS_CONFIG = """
listeners.ssl.default = 127.0.0.1:{{tls_port}}
ssl_options.cacertfile = {ca}
ssl_options.certfile = {cert}
ssl_options.keyfile = {key}
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = EXTERNAL
auth_mechanisms.2 = PLAIN
auth_mechanisms.3 = AMQPLAIN
ssl_cert_login_from = common_name
"""


@dataclass
class TlsNode:
    node: OwnRabbit
    ca: trustme.CA
    files: Path

    def client_files(self, common_name: str, ca: trustme.CA | None = None) -> dict[str, Path]:
        """A client certificate of ``common_name`` (signed by ``ca``, else the node's CA) as files."""
        cert = (ca or self.ca).issue_cert(f"{common_name}.client.example", common_name=common_name)
        where = self.files / f"client-{common_name}-{id(cert)}"
        where.mkdir()
        paths = {"ca": where / "ca.pem", "cert": where / "cert.pem", "key": where / "key.pem"}
        self.ca.cert_pem.write_to_path(paths["ca"])
        cert.cert_chain_pems[0].write_to_path(paths["cert"])
        cert.private_key_pem.write_to_path(paths["key"])
        return paths

    def settings(self, common_name: str, **more: Any) -> Settings:
        paths = self.client_files(common_name)
        return load_settings(
            broker_url=f"amqps://127.0.0.1:{self.node.tls_port}/{VHOST}",
            broker_ssl_ca=paths["ca"],
            broker_ssl_cert=paths["cert"],
            broker_ssl_key=paths["key"],
            broker_login_method="EXTERNAL",
            connect_timeout_s=5.0,
            **more,
        )


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNode]:
    if not available():
        message = "no RabbitMQ server installed to start a node of our own"
        if CI:
            pytest.fail(f"{message} (CI is set: real-service tests must run)")
        pytest.skip(message)
    files = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(files / "ca.pem")
    server.cert_chain_pems[0].write_to_path(files / "server.pem")
    server.private_key_pem.write_to_path(files / "server.key")
    node = OwnRabbit(tmp_path_factory.mktemp("rabbit"))
    config = TLS_CONFIG.format(ca=files / "ca.pem", cert=files / "server.pem", key=files / "server.key")
    node.start(config=config, plugins=("rabbitmq_auth_mechanism_ssl",))
    try:
        node.ctl("add_vhost", VHOST)
        node.ctl("add_user", USER, "unused-password")
        node.ctl("clear_password", USER)  # certificate login only
        node.ctl("set_permissions", "-p", VHOST, USER, ".*", ".*", ".*")
        yield TlsNode(node, ca, files)
    finally:
        node.stop()


def test_every_process_connects_by_certificate_and_the_whole_path_works(tls_node: TlsNode) -> None:
    settings = tls_node.settings(USER, test_subsystem="")
    assert wiring.connect(settings).user_id == USER
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


def test_a_publish_carries_the_user_the_broker_knows_the_sender_by(tls_node: TlsNode) -> None:
    settings = tls_node.settings(USER)
    seen: list[Delivery] = []
    with wiring.connect(settings, confirm_publish=True) as connection:
        queue = connection.declare_reply_queue(names.REPLY_QUEUE_PREFIX)
        connection.consume(queue, seen.append, no_ack=True)
        connection.publish(b"{}", routing_key=queue, persistent=False)
        connection.flush(TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        while not seen:
            assert time.monotonic() < deadline, "the message did not come back"
            connection.drain(0.2)
    assert [d.user_id for d in seen] == [USER]


def test_a_certificate_of_an_unknown_user_is_refused_for_good(tls_node: TlsNode) -> None:
    settings = tls_node.settings("nobody-here")
    with pytest.raises(BrokerRefused), wiring.connect(settings) as connection:
        connection.connect()


def test_a_certificate_of_another_ca_is_refused(tls_node: TlsNode) -> None:
    paths = tls_node.client_files(USER, ca=trustme.CA())
    settings = tls_node.settings(USER).with_overrides(
        broker_ssl_cert=paths["cert"], broker_ssl_key=paths["key"]
    )
    connection = wiring.connect(settings, connect_retries=1)
    with pytest.raises(connection.errors):
        connection.connect()
    connection.close()


def test_a_broker_whose_certificate_our_ca_did_not_sign_is_refused(tls_node: TlsNode) -> None:
    other = tls_node.files / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)
    settings = tls_node.settings(USER).with_overrides(broker_ssl_ca=other)
    connection = wiring.connect(settings, connect_retries=1)
    with pytest.raises(connection.errors):
        connection.connect()
    connection.close()


def test_no_log_line_names_a_key_file(tls_node: TlsNode, caplog: pytest.LogCaptureFixture) -> None:
    settings = tls_node.settings(USER)
    with caplog.at_level("DEBUG"), wiring.connect(settings) as connection:
        connection.connect()
        assert str(settings.broker_ssl_key) not in repr(connection)
    key_dir = str(Path(str(settings.broker_ssl_key)).parent)
    assert not [r.getMessage() for r in caplog.records if key_dir in r.getMessage()]


def test_rabbitmqctl_sees_the_connection_logged_in_by_certificate(tls_node: TlsNode) -> None:
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
