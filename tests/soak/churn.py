"""A churning subsystem process: creates, updates, finishes, fails and clears its tasks for ever.

It is the soak's source of truth. It keeps its live tasks in ``STATE/tasks.json`` (and its seq
high-water mark in ``STATE/seq``), so that after a SIGKILL it adopts them again and re-announces
them (resync), as a real subsystem with persisted tasks does. On SIGTERM it stops churning, waits
for the broker to confirm what it published, and writes ``STATE/truth.json``: the tasks it has.

``PYTHONPATH=tests python -m soak.churn --broker URL --subsystem NAME --state DIR``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bus_tasks import transport
from bus_tasks.core.model import State, TaskRecord
from bus_tasks.errors import BusTasksError, SubsystemTaken
from bus_tasks.subsystem import SeqClock, TaskPublisher
from bus_tasks.transport import Bus, BusOptions

log = logging.getLogger("soak.churn")

TASKS_FILE = "tasks.json"
TRUTH_FILE = "truth.json"
CLAIM_TIMEOUT_S = 60.0  # a SIGKILLed predecessor's control consumer must be gone by then
CLEAR_AFTER_S = 8.0  # a done task waits this long for a client's Task.clear, then clears itself
ABORTED_CODE = 411
VERBS = ("createVolume", "copyImage", "deleteImage", "moveImage", "downloadImage")


def save(path: Path, tasks: dict[str, TaskRecord]) -> None:
    """Write the records atomically: a SIGKILL leaves the old file or the new one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([record.model_dump(mode="json") for record in tasks.values()]))
    os.replace(tmp, path)


def load(path: Path) -> list[TaskRecord]:
    if not path.is_file():
        return []
    return [TaskRecord.model_validate(item) for item in json.loads(path.read_text())]


class Churn:
    """One step at a time: create a task, move one on, or clear a done one."""

    def __init__(self, publisher: TaskPublisher, state: Path, rng: random.Random, max_live: int) -> None:
        self.publisher = publisher
        self.tasks_file = state / TASKS_FILE
        self.rng = rng
        self.max_live = max_live
        self.changes = 0

    def step(self) -> None:
        tasks = self.publisher.tasks
        running = [r for r in tasks.values() if not r.state.is_done]
        done = sorted((r for r in tasks.values() if r.state.is_done), key=lambda r: r.updated_at)
        roll = self.rng.random()
        if len(tasks) < self.max_live and roll < 0.3:
            self.create()
        elif running and roll < 0.85:
            self.advance(self.rng.choice(running))
        elif done and time.time() - done[0].updated_at.timestamp() > CLEAR_AFTER_S:
            # Write ahead: a SIGKILL after this leaves a file without it, and the resync on
            # restart removes it from the view if the cleared event never went out.
            remaining = dict(tasks)
            del remaining[done[0].id]
            save(self.tasks_file, remaining)
            self.publisher.clear(done[0].id)
        self.changes += 1
        self.persist()

    def persist(self) -> None:
        save(self.tasks_file, self.publisher.tasks)

    def create(self) -> None:
        rng = self.rng
        tags = ["soak", self.publisher.subsystem, rng.choice(("spm", "hsm")), f"disk:{rng.randrange(8)}"]
        self.publisher.create(rng.choice(VERBS), tags, state=State.QUEUED, message="queued")

    def advance(self, record: TaskRecord) -> None:
        rng = self.rng
        if record.state.is_aborting:
            self.publisher.fail(record.id, code=ABORTED_CODE, message="Task is aborted: stopped by request")
        elif record.state is not State.RUNNING:
            self.publisher.update(record.id, state=State.RUNNING, progress=0, message="running job 1 of 1")
        elif rng.random() < 0.1:
            self.publisher.retag(record.id, [*record.tags[:3], f"disk:{rng.randrange(8)}"])
        else:
            progress = min(100, (record.progress or 0) + rng.randrange(10, 45))
            if progress < 100:
                self.publisher.update(record.id, progress=progress)
            elif rng.random() < 0.2:
                self.publisher.fail(record.id, code=205, message="Cannot create Logical Volume")
            else:
                self.publisher.finish(record.id, message="1 jobs completed successfully")


def claim(publisher: TaskPublisher, connection: Bus, stop: threading.Event) -> None:
    """Listen for control commands, waiting (bounded) for a killed predecessor's claim to go."""
    deadline = time.monotonic() + CLAIM_TIMEOUT_S
    while True:
        try:
            publisher.listen(connection)
            return
        except SubsystemTaken:
            if time.monotonic() >= deadline or stop.wait(0.5):
                raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak.churn")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--subsystem", required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=4.0, help="changes per second")
    parser.add_argument("--max-live", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{args.subsystem} %(levelname)s %(name)s: %(message)s")
    args.state.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    publisher = TaskPublisher(
        transport.open(args.broker, BusOptions(confirm_publish=True), stop=stop),
        args.subsystem,
        seq=SeqClock(args.state / "seq"),
    )
    adopted = load(args.state / TASKS_FILE)
    for record in adopted:
        publisher.adopt(record)
    publisher.on_stop(lambda task_id: None)  # the task shows aborting; a later step fails it
    control = transport.open(args.broker, stop=stop)
    claim(publisher, control, stop)
    serving = threading.Thread(target=publisher.serve_control, args=(control, stop), name="control")
    serving.start()
    churn = Churn(publisher, args.state, random.Random(args.seed), args.max_live)
    log.warning("churning as %s, %d tasks adopted", args.subsystem, len(adopted))
    interval_s = 1.0 / args.rate
    while not stop.wait(interval_s):
        try:
            churn.step()
        except BusTasksError as exc:  # the broker away (a dropped connection), a task cleared
            log.warning("step failed: %s", exc)
    serving.join(30.0)
    publisher.flush(30.0)
    churn.persist()
    save(args.state / TRUTH_FILE, publisher.tasks)
    publisher.close()
    control.close()
    summary: dict[str, Any] = {
        "subsystem": args.subsystem,
        "changes": churn.changes,
        "tasks": len(publisher.tasks),
    }
    log.warning("stopped: %s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
