"""``bus-tasks demo``: the whole system in one process on kombu's ``memory://`` broker."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from bus_tasks import transport
from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.errors import TaskStateError
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.subsystem.simulated import SimulatedSubsystem, start_gluster_tasks, start_storage_tasks
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.workers import render

URL = "memory://"
STORAGE_TASKS = 8
SYNC_TIMEOUT_S = 10.0
# Every simulated task is done within a dozen steps; more rounds than this means a hang.
MAX_ROUNDS = 100


def run_demo(out: TextIO, *, storage_tasks: int = STORAGE_TASKS, seed: int = 7) -> int:
    """Run an aggregator, a storage and a gluster subsystem, and an engine-side client; print."""
    rng = random.Random(seed)
    stop = threading.Event()
    with RunningAggregator(Aggregator(transport.open(URL))):
        storage = SimulatedSubsystem(TaskPublisher(transport.open(URL), "vdsm"))
        gluster = SimulatedSubsystem(TaskPublisher(transport.open(URL), "gluster"))
        sims = (storage, gluster)
        controls = [
            threading.Thread(target=s.publisher.serve_control, args=(transport.open(URL), stop), daemon=True)
            for s in sims
        ]
        for thread in controls:
            thread.start()
        client = TasksClient(transport.open(URL), timeout_s=5.0)

        def synced() -> bool:
            """The aggregator shows every subsystem's current state of every task."""
            expected = {i: r.state.value for s in sims for i, r in s.publisher.tasks.items()}
            seen = {i: t["state"] for i, t in client.get_all_tasks().items()}
            return seen == expected

        def step(times: int = 1) -> None:
            for _ in range(times):
                for sim in sims:
                    sim.step()
            wait_until(synced, timeout_s=SYNC_TIMEOUT_S, what="aggregator in sync")

        try:
            storage_ids = start_storage_tasks(storage, storage_tasks, rng)
            start_gluster_tasks(gluster, ["gv1", "gv2"], rng)
            # Stagger the tasks so the listing shows them at different points of their life.
            for index, task_id in enumerate(storage_ids[: storage_tasks // 2]):
                for _ in range(index * 3):
                    storage.step_one(task_id)
            step(2)

            _section(out, "getAllTasks(): every task, from every subsystem")
            print(render.tasks_table(client.get_all_tasks()), file=out)
            _section(out, 'getAllTasks(tags=["gluster"])')
            print(render.tasks_table(client.get_all_tasks(["gluster"])), file=out)
            _section(out, 'getAllTasks(tags=["spm", "hsm"]): any of the tags')
            print(render.tasks_table(client.get_all_tasks(["spm", "hsm"])), file=out)
            _section(out, "getAllTasksInfo(): legacy, spm tasks only")
            print(render.info_table(client.get_all_tasks_info()), file=out)
            _section(out, "getAllTasksStatuses(): legacy, spm tasks only")
            print(render.statuses_table(client.get_all_tasks_statuses()), file=out)

            running = [i for i, t in client.get_all_tasks(["spm"]).items() if t["taskState"] == "running"]
            if running:
                _section(out, f"Task.stop({running[0]})")
                print(f"-> {client.stop_task(running[0])}", file=out)

            _section(out, "the engine's loop: poll getAllTasksStatuses, clear what finished")
            _engine_loop(out, client, lambda: step(1))
            _section(out, "the rest: clear every done task, whatever its subsystem")
            for _ in _rounds("clearing the rest"):
                left = client.get_all_tasks()
                if not left:
                    break
                for task_id, task in left.items():
                    if task["taskState"] == "finished":
                        client.clear_task(task_id)
                        print(
                            f"clear {task_id} ({task['subsystem']} {task['verb']}) -> True",
                            file=out,
                        )
                step(1)
            _section(out, "getAllTasks() at the end")
            print(render.tasks_table(client.get_all_tasks()), file=out)
        finally:
            stop.set()
            for thread in controls:
                thread.join(5.0)
            client.close()
            for sim in sims:
                sim.publisher.close()
    return 0


def _engine_loop(out: TextIO, client: TasksClient, advance: Callable[[], None]) -> None:
    started = time.monotonic()
    for round_no in _rounds("the engine's loop"):
        statuses = client.get_all_tasks_statuses()
        if not statuses:
            print(f"round {round_no}: nothing left ({time.monotonic() - started:.2f}s)", file=out)
            return
        finished = [i for i, s in statuses.items() if s["taskState"] == "finished"]
        summary = ", ".join(
            f"{state}={sum(1 for s in statuses.values() if s['taskState'] == state)}"
            for state in sorted({s["taskState"] for s in statuses.values()})
        )
        print(
            f"round {round_no}: {len(statuses)} spm tasks ({summary}); clearing {len(finished)}",
            file=out,
        )
        for task_id in finished:
            with contextlib.suppress(TaskStateError):  # the engine's "not yet": a later round
                client.clear_task(task_id)
        advance()


def _rounds(what: str) -> Iterator[int]:
    """0, 1, 2 ... up to MAX_ROUNDS, then fail rather than loop forever."""
    yield from range(MAX_ROUNDS)
    raise RuntimeError(f"{what} did not end within {MAX_ROUNDS} rounds")


def _section(out: TextIO, title: str) -> None:
    print(f"\n== {title}", file=out)
