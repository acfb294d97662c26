"""The soak's process table: a process the chaos killed is no failure; one that exits is."""

from __future__ import annotations

import sys
from pathlib import Path

from soak.system import System


def test_a_process_killed_by_the_chaos_is_not_taken_for_one_that_died(tmp_path: Path) -> None:
    # The window the CI soak fell in: the chaos has killed replica-b and not yet started the next
    # one; the soak's main loop must not read that as the replica dying on its own.
    system = System("amqp://unused", tmp_path, proxy=None)  # type: ignore[arg-type]
    killed = system.spawn("replica-b", [sys.executable, "-c", "import time; time.sleep(60)"])
    died = system.spawn("churn-soak1", [sys.executable, "-c", "raise SystemExit(3)"])
    killed.kill()
    died.popen.wait(30)
    assert system.exited() == ["churn-soak1#1 exited 3"]


def test_a_stopped_process_is_not_a_failure_either(tmp_path: Path) -> None:
    system = System("amqp://unused", tmp_path, proxy=None)  # type: ignore[arg-type]
    child = system.spawn("stomp", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert system.exited() == []
    assert child.stop() != 0  # SIGTERM ends it with a signal status
    assert system.exited() == []
