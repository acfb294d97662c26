"""Simulated subsystems (storage, gluster) for the demo, docker-compose and tests."""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher

log = logging.getLogger(__name__)

Step = dict[str, Any]

ABORTED_CODE = 411


@dataclass
class _Running:
    task_id: str
    steps: deque[Step] = field(default_factory=deque)


class SimulatedSubsystem:
    """Runs tasks through scripted steps, one step per :meth:`step`; obeys stop and revert."""

    def __init__(self, publisher: TaskPublisher) -> None:
        self.publisher = publisher
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        publisher.on_stop(self._stop)
        publisher.on_revert(self._revert)

    def start(self, verb: str, tags: list[str], steps: list[Step], data: dict[str, Any] | None = None) -> str:
        record = self.publisher.create(verb, tags, data=data)
        with self._lock:
            self._running[record.id] = _Running(record.id, deque(steps))
        return record.id

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def step(self) -> None:
        """Advance every task by one step."""
        with self._lock:
            task_ids = list(self._running)
        for task_id in task_ids:
            self.step_one(task_id)

    def step_one(self, task_id: str) -> None:
        """Advance one task by one step."""
        with self._lock:
            task = self._running.get(task_id)
            if task is None or not task.steps:
                return
            change = task.steps[0]
        if task_id in self.publisher:
            self.publisher.update(task_id, **change)  # if this raises, the step is tried again
        with self._lock:
            # A stop or revert may have replaced the script meanwhile: then it stays as it is.
            if self._running.get(task_id) is task and task.steps and task.steps[0] is change:
                task.steps.popleft()
                if not task.steps:
                    del self._running[task_id]

    def run(self, stop: threading.Event, interval_s: float = 0.2) -> None:
        while not stop.wait(interval_s):
            self.step()

    def _stop(self, task_id: str) -> None:
        with self._lock:
            self._running[task_id] = _Running(
                task_id,
                deque(
                    [
                        {
                            "state": State.FAILED,
                            "code": ABORTED_CODE,
                            "message": "Task is aborted: stopped by request",
                        }
                    ]
                ),
            )

    def _revert(self, task_id: str) -> None:
        with self._lock:
            self._running[task_id] = _Running(
                task_id,
                deque(
                    [
                        {"state": State.RECOVERING, "message": "reverting"},
                        {"state": State.RECOVERED, "message": "reverted", "code": 0},
                    ]
                ),
            )


STORAGE_VERBS: list[tuple[str, list[str]]] = [
    ("createVolume", ["spm"]),
    ("copyImage", ["spm"]),
    ("deleteImage", ["spm"]),
    ("downloadImage", ["hsm"]),
    ("prepareImage", ["hsm"]),
    ("moveImage", ["spm"]),
]


def storage_steps(rng: random.Random, *, fail: bool) -> list[Step]:
    steps: list[Step] = [
        {"state": State.PREPARING},
        {"state": State.ACQUIRING},
        {"state": State.QUEUED},
        {"state": State.RUNNING, "message": "running job 1 of 1", "progress": 0},
    ]
    steps += [{"progress": p} for p in sorted(rng.sample(range(5, 100, 5), 3))]
    if fail:
        steps.append({"state": State.FAILED, "code": 205, "message": "Cannot create Logical Volume"})
    else:
        steps.append(
            {
                "state": State.FINISHED,
                "progress": 100,
                "message": "1 jobs completed successfully",
                "result": "",
            }
        )
    return steps


def start_storage_tasks(
    sim: SimulatedSubsystem, count: int, rng: random.Random, *, fail_every: int = 4
) -> list[str]:
    ids = []
    for i in range(count):
        verb, tags = STORAGE_VERBS[i % len(STORAGE_VERBS)]
        ids.append(sim.start(verb, tags, storage_steps(rng, fail=(i % fail_every == fail_every - 1))))
    return ids


def rebalance_steps(volume: str, rng: random.Random) -> list[Step]:
    files = rng.randint(500, 5000)
    steps: list[Step] = []
    for scanned in (files // 4, files // 2, files):
        data = {
            "type": "rebalance",
            "volume": volume,
            "filesScanned": scanned,
            "filesMoved": scanned // 3,
            "filesFailed": 0,
            "filesSkipped": scanned // 10,
            "totalSizeMoved": scanned * 4096,
        }
        steps.append({"state": State.RUNNING, "message": "in progress", "data": data})
    steps.append({"state": State.FINISHED, "message": "completed", "progress": 100})
    return steps


def start_gluster_tasks(sim: SimulatedSubsystem, volumes: list[str], rng: random.Random) -> list[str]:
    return [
        sim.start(
            "rebalance",
            ["gluster", f"volume:{volume}"],
            rebalance_steps(volume, rng),
            data={"type": "rebalance", "volume": volume, "filesScanned": 0},
        )
        for volume in volumes
    ]
