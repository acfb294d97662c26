"""The soak's callers, in one process of their own: pollers, a clearer, watchers, STOMP callers.

Every worker tolerates what the chaos does to it (a call that fails while a replica restarts or a
connection drops is counted, and the worker goes on). SIGUSR1 quiesces the callers that change
or ask (the watchers go on following); SIGTERM ends the watchers a few seconds later, and the
process writes ``OUT``: each worker's counts and each watcher's view of the tasks.

``PYTHONPATH=tests python -m soak.clients --broker URL --stomp-port N --out FILE``
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from support.vdsm_stomp import RawVdsmClient

from bus_tasks.client import TasksClient
from bus_tasks.errors import BusTasksError, TaskAborted, TaskNotFinished, UnknownTask

log = logging.getLogger("soak.clients")

CALL_TIMEOUT_S = 10.0
LINGER_S = 5.0  # after SIGTERM, the watchers follow this much longer before they report
DONE_STATES = frozenset({"finished", "recovered", "failed"})
# What each watcher selects: None is every task.
WATCHES: dict[str, list[str] | None] = {"watch-all": None, "watch-spm": ["spm"]}
# Expected answers while tasks come and go: counted apart, not as failures.
RACES = (UnknownTask, TaskNotFinished, TaskAborted)


class Workers:
    """The workers' shared flags and tallies."""

    def __init__(self, url: str, stomp_port: int, seed: int | None) -> None:
        self.url = url
        self.stomp_port = stomp_port
        self.rng = random.Random(seed)
        self.quiet = threading.Event()  # callers stop
        self.end_at: float | None = None  # watchers stop at this monotonic time
        self.counts: Counter[str] = Counter()
        self.views: dict[str, dict[str, dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def attempt(self, name: str, call: Callable[[], object]) -> object:
        try:
            result = call()
        except RACES:
            self.count(f"{name}.race")
            return None
        except BusTasksError as exc:
            self.count(f"{name}.failed")
            log.info("%s failed: %s", name, exc)
            return None
        self.count(f"{name}.ok")
        return result

    # -- callers ------------------------------------------------------------------------

    def poller(self, name: str) -> None:
        """getAllTasks with and without tags, a task's status, the legacy listing."""
        with TasksClient(self.url, timeout_s=CALL_TIMEOUT_S, wait_for_aggregator=True) as client:
            while not self.quiet.wait(0.3):
                tags = self.rng.choice((None, "spm", ["soak", "hsm"]))
                tasks = self.attempt(name, partial(client.get_all_tasks, tags))
                if isinstance(tasks, dict) and tasks:
                    task_id = self.rng.choice(sorted(tasks))
                    self.attempt(name, partial(client.get_task_status, task_id))
                self.attempt(name, client.get_all_tasks_statuses)

    def clearer(self, name: str) -> None:
        """The engine's part: clear done tasks (Task.clear), now and then stop a running one."""
        with TasksClient(self.url, timeout_s=CALL_TIMEOUT_S, wait_for_aggregator=True) as client:
            while not self.quiet.wait(1.0):
                tasks = self.attempt(name, partial(client.get_all_tasks, "soak"))
                if not isinstance(tasks, dict):
                    continue
                done = [t for t, d in sorted(tasks.items()) if d["state"] in DONE_STATES]
                for task_id in self.rng.sample(done, min(3, len(done))):
                    self.attempt(f"{name}.clear", partial(client.clear_task, task_id))
                running = [t for t, d in sorted(tasks.items()) if d["state"] == "running"]
                if running and self.rng.random() < 0.2:
                    task_id = self.rng.choice(running)
                    self.attempt(f"{name}.stop", partial(client.stop_task, task_id))

    def stomp_caller(self, name: str) -> None:
        """VDSM's client over the STOMP front door, a new connection every 20 calls."""
        while not self.quiet.is_set():
            try:
                client = RawVdsmClient(self.stomp_port, timeout_s=CALL_TIMEOUT_S)
                try:
                    client.connect()
                    for _ in range(20):
                        method = self.rng.choice(("Host.getAllTasks", "Host.getAllTasksStatuses"))
                        reply = client.call(method)
                        self.count(f"{name}.ok" if "result" in reply else f"{name}.failed")
                        if self.quiet.wait(0.3):
                            break
                finally:
                    client.close()
            except (OSError, AssertionError, ValueError) as exc:
                self.count(f"{name}.failed")
                log.info("%s failed: %s", name, exc)
                self.quiet.wait(1.0)

    # -- watchers -----------------------------------------------------------------------

    def watcher(self, name: str) -> None:
        """Follow a selection with ``client.watch()``; a watch that breaks is started again."""
        while not self.ended():
            view: dict[str, dict[str, Any]] = {}
            with TasksClient(self.url, timeout_s=CALL_TIMEOUT_S, wait_for_aggregator=True) as client:
                watch = client.watch(WATCHES[name])
                # A quiet selection yields nothing: the idle hook ends the watch once it is time.
                watch.on_idle = lambda w=watch: w.close() if self.ended() else None
                try:
                    for event in watch:
                        if event.kind == "listing" and event.tasks is not None:
                            view = dict(event.tasks)
                        elif event.kind == "changed" and event.task_id and event.task is not None:
                            view[event.task_id] = event.task
                        elif event.kind == "removed" and event.task_id:
                            view.pop(event.task_id, None)
                        self.count(f"{name}.{event.kind}")
                        with self.lock:
                            self.views[name] = view
                        if self.ended():
                            break
                except BusTasksError as exc:
                    self.count(f"{name}.restarted")
                    log.warning("%s restarts: %s", name, exc)
                finally:
                    watch.close()

    def guarded(self, job: Callable[[str], None], name: str) -> None:
        """Run a worker; an error that is not one of bus_tasks' typed errors is a finding."""
        try:
            job(name)
        except Exception:
            log.exception("%s crashed", name)
            self.count(f"{name}.crashed")

    def ended(self) -> bool:
        return self.end_at is not None and time.monotonic() >= self.end_at


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak.clients")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--stomp-port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="clients %(levelname)s %(name)s: %(message)s")
    workers = Workers(args.broker, args.stomp_port, args.seed)
    ended = threading.Event()

    def on_quiesce(signum: int, frame: FrameType | None) -> None:
        workers.quiet.set()

    def on_term(signum: int, frame: FrameType | None) -> None:
        workers.quiet.set()
        workers.end_at = time.monotonic() + LINGER_S
        ended.set()

    signal.signal(signal.SIGUSR1, on_quiesce)
    signal.signal(signal.SIGTERM, on_term)
    jobs: list[tuple[str, Callable[[str], None]]] = [
        ("poll-1", workers.poller),
        ("poll-2", workers.poller),
        ("clearer", workers.clearer),
        ("stomp-1", workers.stomp_caller),
        ("stomp-2", workers.stomp_caller),
        *((name, workers.watcher) for name in WATCHES),
    ]
    threads = [
        threading.Thread(target=workers.guarded, args=(job, name), name=name, daemon=True)
        for name, job in jobs
    ]
    for thread in threads:
        thread.start()
    workers.quiet.wait()
    callers = [thread for thread in threads if not thread.name.startswith("watch")]
    for thread in callers:
        thread.join(2 * CALL_TIMEOUT_S)
    log.warning("quiesced: %s", dict(workers.counts))
    ended.wait()
    deadline = time.monotonic() + LINGER_S + 2 * CALL_TIMEOUT_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    with workers.lock:
        report = {"counts": dict(workers.counts), "views": workers.views, "stuck": stuck}
    args.out.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
