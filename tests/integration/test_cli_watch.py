"""``bus-tasks tasks --watch`` over the real RabbitMQ: lines when piped, a live table on a terminal."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.brokers import Broker, SystemFactory
from support.cli_helpers import BUS_TASKS, cli_env

from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

pytestmark = pytest.mark.integration
TIMEOUT_S = 20.0


class Lines:
    """The stdout lines of a running ``bus-tasks``, gathered by a thread."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [str(BUS_TASKS), *args],
            cwd=cwd,
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                self.lines.append(line.rstrip("\n"))

    def stop(self) -> tuple[int, str]:
        self.popen.send_signal(signal.SIGINT)
        code = self.popen.wait(10)
        self._reader.join(5)
        assert self.popen.stderr is not None
        with self.popen.stderr:
            return code, self.popen.stderr.read()


def test_watch_piped_prints_the_listing_then_one_line_per_change(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    pub = TaskPublisher(rabbitmq_broker.connection(), "vdsm")
    first = pub.create("copyImage", ["spm"], state=State.RUNNING)
    pub.flush()
    watcher = Lines("tasks", "--broker", rabbitmq_broker.url, "--watch", "--tag", "spm", cwd=tmp_path)
    try:
        wait_until(lambda: watcher.lines, timeout_s=TIMEOUT_S, what="the listing line")
        assert " listing 1 task: running 1" in watcher.lines[0]
        pub.update(first.id, progress=40, message="half way")
        pub.create("rebalance", ["gluster"])  # not selected: no line
        pub.finish(first.id)
        pub.flush()
        # Changes come in the order they were applied: a line for the unselected task would come
        # before the line of the finish published after it.
        wait_until(
            lambda: any(f"changed {first.id} " in line and " finished" in line for line in watcher.lines),
            timeout_s=TIMEOUT_S,
            what="the finish's line",
        )
        changed = watcher.lines[1:]
        assert len(changed) == 2, changed
        assert f"changed {first.id} vdsm copyImage [spm] running 40% half way" in changed[0]
        assert f"changed {first.id} vdsm copyImage [spm] finished" in changed[1]
    finally:
        code, stderr = watcher.stop()
    assert code == 130, stderr  # Ctrl-C: the README's status for an interrupted command


def test_watch_json_gives_one_object_per_line_bookmarks_included(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    pub = TaskPublisher(rabbitmq_broker.connection(), "gluster")
    watcher = Lines(
        "tasks", "--broker", rabbitmq_broker.url, "--watch", "--json", "--tag", "volume:gv1", cwd=tmp_path
    )
    try:
        wait_until(lambda: watcher.lines, timeout_s=TIMEOUT_S, what="the listing")
        assert json.loads(watcher.lines[0])["kind"] == "listing"
        pub.create("rebalance", ["volume:gv2"])
        pub.flush()
        wait_until(
            lambda: any(json.loads(line)["kind"] == "bookmark" for line in watcher.lines[1:]),
            timeout_s=TIMEOUT_S,
            what="a bookmark",
        )
        task = pub.create("rebalance", ["volume:gv1"])
        pub.flush()
        wait_until(
            lambda: any(json.loads(line).get("id") == task.id for line in watcher.lines),
            timeout_s=TIMEOUT_S,
            what="the change",
        )
        change = next(json.loads(line) for line in watcher.lines if json.loads(line).get("id") == task.id)
        assert change["kind"] == "changed"
        assert change["task"]["tags"] == ["volume:gv1"]
    finally:
        code, stderr = watcher.stop()
    assert code == 130, stderr  # Ctrl-C: the README's status for an interrupted command


def test_watch_on_a_terminal_redraws_the_table_in_place_with_counts_by_state(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    pub = TaskPublisher(rabbitmq_broker.connection(), "vdsm")
    task = pub.create("copyImage", ["spm"], state=State.RUNNING)
    pub.flush()
    leader, follower = os.openpty()
    process = subprocess.Popen(
        [str(BUS_TASKS), "tasks", "--broker", rabbitmq_broker.url, "--watch"],
        cwd=tmp_path,
        env=cli_env(COLUMNS="160", LINES="40"),
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    screen = bytearray()

    def read_until(text: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while text not in screen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not on the screen: {bytes(screen[-2000:])!r}"
            if select.select([leader], [], [], remaining)[0]:
                screen.extend(os.read(leader, 65536))

    try:
        read_until(b"running 1")
        assert screen.startswith(b"\x1b[H\x1b[2J"), "drawn from the top of a cleared screen"
        assert task.id.encode() in screen
        mark = len(screen)
        pub.finish(task.id)
        pub.flush()
        read_until(b"finished 1")
        redraw = bytes(screen[mark:])
        assert b"\x1b[H\x1b[2J" in redraw, "redrawn in place"
        assert b"finished 1" in redraw
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(10)
        os.close(leader)
        assert process.stderr is not None
        process.stderr.close()
    assert code == 130  # Ctrl-C
