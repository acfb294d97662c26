"""Run the ``bus-tasks`` console script in tests: a clean environment, deadlines, parsed output."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from support.processes import Process

# The console script of the environment running the tests (.venv/bin/bus-tasks).
BUS_TASKS = Path(sys.executable).parent / "bus-tasks"
CLI_TIMEOUT_S = 60.0
_FOOTER = re.compile(r"^\((\d+) tasks?\)$")


def cli_env(**env: str) -> dict[str, str]:
    """This process's environment without any ``BUS_TASKS_*`` setting, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("BUS_TASKS_")}
    return {**clean, **env}


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout_s: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``bus-tasks ARGS`` to completion, in ``cwd`` (away from the repository's config file)."""
    return subprocess.run(
        [str(BUS_TASKS), *args],
        cwd=cwd,
        env=env if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def run_cli_into_head(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``bus-tasks ARGS | head -n 1`` in bash with ``pipefail``: the status is bus-tasks' own."""
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", '"$@" | head -n 1', "bash", str(BUS_TASKS), *args],
        cwd=cwd,
        env=env if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def run_cli_on_terminal(
    *args: str, cwd: Path, columns: int, timeout_s: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``bus-tasks ARGS`` with its stdout on a pseudo-terminal ``columns`` wide ($COLUMNS).

    The terminal's ``\\r\\n`` line ends are given back as ``\\n``.
    """
    deadline = time.monotonic() + timeout_s
    leader, follower = os.openpty()
    process = subprocess.Popen(
        [str(BUS_TASKS), *args],
        cwd=cwd,
        env=cli_env(COLUMNS=str(columns)),
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([leader], [], [], max(remaining, 0))
            if not readable:
                process.kill()
                raise TimeoutError(f"bus-tasks {' '.join(args)} still writing after {timeout_s}s")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert process.stderr is not None
    with process.stderr:
        stderr = process.stderr.read().decode()
    returncode = process.wait(max(deadline - time.monotonic(), 0.1))
    stdout = b"".join(chunks).decode().replace("\r\n", "\n")
    return subprocess.CompletedProcess(process.args, returncode, stdout, stderr)


def parse_table(text: str) -> tuple[list[dict[str, str]], int]:
    """The rows of a ``bus_tasks.workers.render`` table (header -> cell) and the count of its footer."""
    lines = text.rstrip("\n").splitlines()
    footer = _FOOTER.match(lines[-1])
    assert footer is not None, f"no '(N tasks)' or '(1 task)' footer in:\n{text}"
    header = lines[0]
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [start for _, start in columns[1:]] + [None]
    rows = [
        {name: line[start:end].strip() for (name, start), end in zip(columns, ends, strict=True)}
        for line in lines[1:-1]
    ]
    return rows, int(footer.group(1))


def details(
    task_id: str, *, subsystem: str, verb: str, tags: Sequence[str], state: str = "running"
) -> dict[str, Any]:
    """The ``TaskDetails`` of a task that has never changed since it was created (times aside)."""
    return {
        "id": task_id,
        "taskID": task_id,
        "verb": verb,
        "subsystem": subsystem,
        "tags": list(tags),
        "tag": tags[0] if tags else "",
        "state": state,
        "taskState": state,
        "taskResult": "",
        "code": 0,
        "message": "",
        "result": "",
        "progress": None,
        "data": {},
    }


def without_times(tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``tasks`` without ``createdAt``/``updatedAt``, after checking they are RFC 3339 UTC."""
    stripped = {}
    for task_id, task in tasks.items():
        rest = dict(task)
        for key in ("createdAt", "updatedAt"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", rest.pop(key)), task
        stripped[task_id] = rest
    return stripped


class BusTasksProcess(Process):
    """``bus-tasks ARGS`` running in the background; a thread collects its stderr lines."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        super().__init__([str(BUS_TASKS), *args], cwd=cwd, env=env if env is not None else cli_env())
