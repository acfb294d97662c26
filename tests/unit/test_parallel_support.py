"""``shared_across_workers``: one external server for every xdist worker, started once, stopped last.

The server here is a real process listening on a free port; the users are threads, each with a
file lock of its own (as each worker process has), all inside at the same time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.parallel import run_dir, shared_across_workers
from support.ports import free_port

from bus_tasks.testing import wait_until

USERS = 4
WAIT_S = 30.0

_LISTENER = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    server.accept()[0].close()
"""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Listener:
    """Starts and stops listener processes the way a session fixture would; counts both."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []
        self.stopped: list[dict[str, Any]] = []
        self.directories: list[Path] = []
        self._popen: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, directory: Path) -> dict[str, Any]:
        self.directories.append(directory)
        port = free_port()
        popen = subprocess.Popen([sys.executable, "-c", _LISTENER, str(port)], cwd=directory)
        self._popen[popen.pid] = popen
        wait_until(lambda: _answers(port), timeout_s=WAIT_S, interval_s=0.05, what=f"listener on {port}")
        info = {"port": port, "pid": popen.pid}
        self.started.append(info)
        return info

    def stop(self, info: dict[str, Any]) -> None:
        """By pid alone, as a worker that did not start it must."""
        self.stopped.append(info)
        os.kill(info["pid"], signal.SIGTERM)
        self._popen.pop(info["pid"]).wait(WAIT_S)  # reaps it: here the starter is this process

    def kill_all(self) -> None:
        for popen in self._popen.values():
            popen.kill()
            popen.wait(WAIT_S)


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.kill_all()


def test_concurrent_users_share_one_server_stopped_after_the_last_leaves(
    tmp_path_factory: pytest.TempPathFactory, listener: Listener
) -> None:
    name = f"listener-{uuid.uuid4().hex[:8]}"
    run_dir(tmp_path_factory)  # made now: the factory makes its directory lazily, not thread-safely
    inside = threading.Barrier(USERS, timeout=WAIT_S)
    seen: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def use() -> None:
        try:
            with shared_across_workers(tmp_path_factory, name, listener.start, listener.stop) as info:
                assert _answers(info["port"])
                seen.append(info)
                inside.wait()  # every user holds it at once
        except BaseException as exc:
            errors.append(exc)

    users = [threading.Thread(target=use) for _ in range(USERS)]
    for user in users:
        user.start()
    for user in users:
        user.join(WAIT_S)
    assert not errors, errors
    assert len(seen) == USERS
    assert len(listener.started) == 1
    assert seen == [listener.started[0]] * USERS
    assert listener.stopped == listener.started
    assert not _answers(listener.started[0]["port"])


def test_a_user_after_the_last_one_left_starts_a_fresh_server_in_a_new_directory(
    tmp_path_factory: pytest.TempPathFactory, listener: Listener
) -> None:
    name = f"listener-{uuid.uuid4().hex[:8]}"
    with shared_across_workers(tmp_path_factory, name, listener.start, listener.stop) as first:
        pass
    assert not _alive(first["pid"])
    with shared_across_workers(tmp_path_factory, name, listener.start, listener.stop) as second:
        assert _answers(second["port"])
        assert second["pid"] != first["pid"]
    assert listener.stopped == [first, second]
    assert len(set(listener.directories)) == 2
    assert all(d.parent == run_dir(tmp_path_factory) for d in listener.directories)


def test_a_failed_start_leaves_no_user_behind(
    tmp_path_factory: pytest.TempPathFactory, listener: Listener
) -> None:
    name = f"listener-{uuid.uuid4().hex[:8]}"

    def broken(directory: Path) -> dict[str, Any]:
        raise OSError("no such server")

    with (
        pytest.raises(OSError, match="no such server"),
        shared_across_workers(tmp_path_factory, name, broken, listener.stop),
    ):
        pytest.fail("a server that did not start is not yielded")
    with shared_across_workers(tmp_path_factory, name, listener.start, listener.stop) as info:
        assert _answers(info["port"])
    assert listener.stopped == listener.started == [info]
