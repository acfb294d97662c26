"""A RabbitMQ node of a test's own with a TLS listener and certificate login (SPEC 15), and the
client certificates and settings of each identity that connects to it. Tests start it with
:func:`start_tls_rabbit` in a fixture; ``bench/tls_ingest.py`` with :func:`tls_rabbit`."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from bus_tasks.config import Settings, load_settings
from support.brokers import CI
from support.own_rabbit import OwnRabbit, available

# rabbitmq.conf: TLS with a client certificate required; the certificate's CN is the user.
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
class TlsRabbit:
    """The node, the CA its clients' certificates come from, and a directory for their files."""

    node: OwnRabbit
    ca: trustme.CA
    files: Path
    vhost: str

    def client_files(self, common_name: str, ca: trustme.CA | None = None) -> dict[str, Path]:
        """A client certificate of ``common_name`` (signed by ``ca``, else the node's CA) as files."""
        cert = (ca or self.ca).issue_cert(f"{common_name}.client.example", common_name=common_name)
        # A directory of its own: id(cert) came back once a certificate was collected.
        where = Path(tempfile.mkdtemp(prefix=f"client-{common_name}-", dir=self.files))
        paths = {"ca": where / "ca.pem", "cert": where / "cert.pem", "key": where / "key.pem"}
        self.ca.cert_pem.write_to_path(paths["ca"])
        cert.cert_chain_pems[0].write_to_path(paths["cert"])
        cert.private_key_pem.write_to_path(paths["key"])
        return paths

    def settings(self, common_name: str, **more: Any) -> Settings:
        """The settings of a process that logs in as ``common_name`` by certificate."""
        paths = self.client_files(common_name)
        return load_settings(
            with_store=False,
            broker_url=f"amqps://127.0.0.1:{self.node.tls_port}/{self.vhost}",
            broker_ssl_ca=paths["ca"],
            broker_ssl_cert=paths["cert"],
            broker_ssl_key=paths["key"],
            broker_login_method="EXTERNAL",
            connect_timeout_s=5.0,
            **more,
        )


@contextmanager
def tls_rabbit(files: Path, base: Path, vhost: str) -> Iterator[TlsRabbit]:
    """The node started under ``base`` (its certificates and its clients' in ``files``), and
    stopped after (also on failure)."""
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(files / "ca.pem")
    server.cert_chain_pems[0].write_to_path(files / "server.pem")
    server.private_key_pem.write_to_path(files / "server.key")
    node = OwnRabbit(base)
    config = TLS_CONFIG.format(ca=files / "ca.pem", cert=files / "server.pem", key=files / "server.key")
    node.start(config=config, plugins=("rabbitmq_auth_mechanism_ssl",))
    try:
        yield TlsRabbit(node, ca, files, vhost)
    finally:
        node.stop()


def start_tls_rabbit(tmp_path_factory: pytest.TempPathFactory, vhost: str) -> Iterator[TlsRabbit]:
    """For a fixture: the node started (skipped without RabbitMQ installed, failed under CI), and
    stopped after."""
    if not available():
        message = "no RabbitMQ server installed to start a node of our own"
        if CI:
            pytest.fail(f"{message} (CI is set: real-service tests must run)")
        pytest.skip(message)
    with tls_rabbit(tmp_path_factory.mktemp("tls"), tmp_path_factory.mktemp("rabbit"), vhost) as rabbit:
        yield rabbit
