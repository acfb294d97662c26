"""Running the suite in parallel (pytest-xdist): what a test must do to share the machine.

``make test`` runs ``pytest -n N --dist loadfile``: each worker is a process of its own with its
own session, so a ``scope="session"`` fixture runs once *per worker*, at the same time as in the
others; a module runs whole on one worker, its tests in order. A test is isolation-safe when
everything it touches outside its process is its own:

- RabbitMQ: a vhost named with a uuid (``rabbitmq_vhost``, ``fresh_vhost``), never ``/``.
- Redis: a key prefix with a uuid (``make_broker``), never FLUSHDB on the shared server.
- TCP ports: ``support.ports.free_port()`` (the kernel picks one), never a fixed number.
- Files: ``tmp_path`` / ``tmp_path_factory`` (per worker), never a fixed path under /tmp.

Two ways to share what cannot be per worker:

1. One module: its tests never run at the same time as each other, and a ``scope="module"``
   fixture starts once. For a resource that must not be used concurrently with itself (the
   machine's one glusterd: test_gluster.py, which also holds a machine-wide ``file_lock`` so that
   another checkout's run waits), or an expensive fixture (the browser, the demo run). Not
   ``xdist_group`` marks with ``--dist loadgroup``: with pytest 9.2, pytest-xdist 3.8 no longer
   tags the grouped tests' ids, so the groups are silently split across workers.
2. One external server for all workers: ``shared_across_workers`` below. The first worker to
   need it starts it under a file lock and writes what the others need (its port, pid, data
   directory) to a JSON file beside the run's temporary directories; the others read it; the
   last one to finish stops it. Use it for a session-scoped fixture that starts a server of its
   own (a second RabbitMQ node, say)::

       @pytest.fixture(scope="session")
       def rabbitmq_node(tmp_path_factory):
           with shared_across_workers(tmp_path_factory, "rabbitmq-node", start_node, stop_node) as info:
               yield info  # e.g. {"port": 25672, "pid": 1234, "node": "bt-...@localhost"}

   ``start(directory)`` gets an empty directory of its own, picks free ports, returns a JSON
   dict once the server answers; ``stop(info)`` ends it from *any* worker (by pid, by a CLI):
   it must not rely on objects of the process that started it. Name nodes and data directories
   after ``directory``, so two runs on one machine (two engineers, CI) do not meet.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bus_tasks.testing import wait_until

SHARED_START_S = 300.0  # how long a worker waits for another to start (or stop) a shared server

Info = dict[str, Any]


def worker_id() -> str:
    """This process's xdist worker (``gw0``, ``gw1``...), or ``master`` when not under xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "master")


def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by every worker of this run (and by this run alone)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id() != "master" else base


@contextmanager
def shared_across_workers(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    start: Callable[[Path], Info],
    stop: Callable[[Info], None],
    *,
    timeout_s: float = SHARED_START_S,
) -> Iterator[Info]:
    """One server ``name`` for every worker of the run: started by the first, stopped by the last.

    ``start(directory)`` returns what users need (JSON); ``stop(info)`` ends it. Waiting for the
    lock is bounded by ``timeout_s`` (a ``TimeoutError`` then fails the fixture).
    """
    root = run_dir(tmp_path_factory)
    state_file = root / f"{name}.json"
    lock = root / f"{name}.lock"
    with file_lock(lock, timeout_s):
        state = _read(state_file)
        if state["users"] == 0:  # first user, or every earlier user is done and stopped it
            state["info"] = start(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root)))
        state["users"] += 1
        state_file.write_text(json.dumps(state))
    info: Info = state["info"]
    try:
        yield info
    finally:
        with file_lock(lock, timeout_s):
            state = _read(state_file)
            state["users"] -= 1
            if state["users"] == 0:
                state["info"] = None
            state_file.write_text(json.dumps(state))
            if state["info"] is None:
                stop(info)


@contextmanager
def file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout_s`` (``TimeoutError``).

    Held per open file: it excludes other workers, other test runs on the machine, other threads.
    """
    with path.open("a") as handle:

        def taken() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        wait_until(taken, timeout_s=timeout_s, interval_s=0.05, what=f"the lock {path}")
        yield  # closing the file releases the lock


def _read(state_file: Path) -> dict[str, Any]:
    if not state_file.exists():
        return {"users": 0, "info": None}
    state: dict[str, Any] = json.loads(state_file.read_text())
    return state
