"""``bus-tasks stomp`` as its own process: ready line, a VDSM call through it, TLS options, SIGTERM exits 0."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import pytest
import trustme
from support.brokers import Broker, System
from support.ports import free_port
from support.processes import BIN, Process
from support.vdsm_stomp import RawVdsmClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _start(broker: Broker, port: int, *extra: str) -> Process:
    process = Process(
        [str(BIN / "bus-tasks"), "stomp", "--broker", broker.url, "--listen", f"127.0.0.1:{port}", *extra],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO"},
    )
    process.wait_for_line(f"stomp front door listening on 127.0.0.1:{port}", timeout_s=30)
    return process


def test_bus_tasks_stomp_logs_ready_answers_vdsm_frames_and_exits_0_on_sigterm(
    rabbitmq_system: System,
) -> None:
    port = free_port()
    process = _start(rabbitmq_system.broker, port, "--timeout", "5")
    try:
        client = RawVdsmClient(port)
        assert client.connect().headers["heart-beat"] == "24000,0"
        assert client.call("Host.getAllTasksStatuses")["result"] == {}
        client.close()
    finally:
        assert process.terminate() == 0, process.log


def test_bus_tasks_stomp_with_tls_ca_requires_a_client_certificate(
    rabbitmq_system: System, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    tls = ["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")]
    process = _start(rabbitmq_system.broker, port, *tls, "--tls-ca", str(tmp_path / "ca.pem"))
    try:
        with_cert = ssl.create_default_context()
        ca.configure_trust(with_cert)
        ca.issue_cert("engine.example").configure_cert(with_cert)
        client = RawVdsmClient(port, ssl_context=with_cert)
        client.connect()
        assert client.call("Host.getAllTasksInfo")["result"] == {}
        client.close()
        without = ssl.create_default_context()
        ca.configure_trust(without)
        refused = RawVdsmClient(port, ssl_context=without, timeout_s=5.0)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            refused.connect()
        refused.close()
    finally:
        assert process.terminate() == 0, process.log


def test_bus_tasks_stomp_takes_its_bounds_from_the_settings_and_its_options(rabbitmq_system: System) -> None:
    port = free_port()
    broker = rabbitmq_system.broker.url
    process = Process(
        [str(BIN / "bus-tasks"), "stomp", "--broker", broker, "--listen", f"127.0.0.1:{port}", "--connect-timeout", "0.5"],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", "BUS_TASKS_STOMP_MAX_CONNECTIONS": "2"},
    )  # fmt: skip
    process.wait_for_line(f"stomp front door listening on 127.0.0.1:{port}", timeout_s=30)
    try:
        client = RawVdsmClient(port)
        client.connect()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as silent,
            socket.create_connection(("127.0.0.1", port), timeout=10) as over,
        ):
            assert over.recv(65536).startswith(b"ERROR\nmessage:too many connections (at most 2)\n")
            silent.settimeout(5.0)
            try:  # closed at 0.5 s, without a CONNECT (a timeout fails the test)
                ended = silent.recv(1) == b""
            except ConnectionResetError:
                ended = True
            assert ended
            process.wait_for_line("closed: no CONNECT within 0.5s", timeout_s=5)
        assert client.call("Host.getAllTasksInfo")["result"] == {}
        client.close()
    finally:
        assert process.terminate() == 0, process.log
