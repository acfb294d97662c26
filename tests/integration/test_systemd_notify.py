"""``Type=notify``: a real ``bus-tasks serve`` tells a real unix datagram socket (standing in for
systemd's) ``READY=1`` once it is ready and ``STOPPING=1`` when told to stop."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.brokers import Broker
from support.gluster import FakeGluster
from support.processes import BIN, Process, start_serve

from bus_tasks.workers import systemd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEADLINE_S = 30.0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(DEADLINE_S)
        yield sock


def test_serve_says_ready_at_its_ready_line_and_stopping_on_sigterm(
    rabbitmq_broker: Broker, notify_socket: socket.socket, tmp_path: Path
) -> None:
    argv = [
        str(BIN / "bus-tasks"),
        "serve",
        "--broker",
        rabbitmq_broker.url,
        "--data-dir",
        str(tmp_path / "d"),
    ]
    env = {**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", "NOTIFY_SOCKET": notify_socket.getsockname()}
    process = Process(argv, env=env)
    try:
        assert notify_socket.recv(4096) == b"READY=1"
        # The ready line is logged before the datagram goes: it is in the log by now (give the
        # reading thread a moment to see it).
        process.wait_for_line("aggregator ready", timeout_s=5.0)
        assert process.popen.poll() is None
        assert process.terminate() == 0
        assert notify_socket.recv(4096) == b"STOPPING=1"
    finally:
        process.kill()


@pytest.mark.parametrize(
    ("command", "ready_line"),
    [
        (["stomp", "--listen", "127.0.0.1:0"], "stomp front door listening"),
        (["gluster", "--interval-s", "0.5"], "gluster plugin ready"),
    ],
)
def test_stomp_and_gluster_say_ready_at_their_ready_line_and_stopping_on_sigterm(
    rabbitmq_broker: Broker, notify_socket: socket.socket, tmp_path: Path, command: list[str], ready_line: str
) -> None:
    serve = start_serve(rabbitmq_broker.url, tmp_path / "d")  # gluster asks it what it knows
    fake = FakeGluster(tmp_path / "fake")
    fake.listing([])
    if command[0] == "gluster":
        command = [*command, "--gluster-bin", str(fake.binary)]
    argv = [str(BIN / "bus-tasks"), *command, "--broker", rabbitmq_broker.url]
    env = {**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", "NOTIFY_SOCKET": notify_socket.getsockname()}
    process = Process(argv, env=env)
    try:
        assert notify_socket.recv(4096) == b"READY=1"
        process.wait_for_line(ready_line, timeout_s=5.0)
        assert process.terminate() == 0
        assert notify_socket.recv(4096) == b"STOPPING=1"
    finally:
        process.kill()
        serve.kill()


def test_notify_reaches_an_abstract_namespace_socket_and_is_silent_without_one() -> None:
    name = f"bus_tasks_test_{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(DEADLINE_S)
        assert systemd.notify(systemd.READY, {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(4096) == b"READY=1"
    assert systemd.notify(systemd.READY, {}) is False
    assert systemd.notify(systemd.READY, {"NOTIFY_SOCKET": "@" + name}) is False  # nobody listens now
