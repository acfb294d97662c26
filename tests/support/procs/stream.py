"""A publisher process for durability tests: a deterministic stream of whole-record events.

Task ``i`` of subsystem ``s`` has a fixed id, tags and final state (see :func:`expected`), so a
test can compute the view that must result, whatever happened to the aggregator meanwhile.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid
from typing import Any

from bus_tasks import transport
from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.transport import BusOptions, TopologyOptions

NAMESPACE = uuid.UUID("6f1c8a52-6d0e-4a55-9a3f-0b8f1f6c1c11")
CHUNK = 100

# The layout of the test's deployment (the tests of the queue layout set it for every process).
TOPOLOGY = TopologyOptions(
    event_log="queue" if os.environ.get("BUS_TASKS_EVENT_LOG") == "queue" else "stream"
)


def task_id(subsystem: str, index: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{subsystem}-{index}"))


def expected(subsystem: str, index: int) -> dict[str, Any]:
    """The final fields of task ``index``, as getAllTasks must show them."""
    failed = index % 7 == 0
    return {
        "subsystem": subsystem,
        "verb": "copyImage",
        "tags": [f"batch:{index % 10}", "spm" if index % 2 == 0 else "hsm"],
        "state": "failed" if failed else "finished",
        "code": 205 if failed else 0,
        "message": "Cannot create volume" if failed else f"done {index}",
        "progress": 90 if failed else 100,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--subsystem", required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--updates", type=int, default=3, help="progress events between create and finish")
    parser.add_argument(
        "--events-per-s",
        type=float,
        default=0.0,
        help="pace of the stream (0: as fast as it goes; SIGUSR1 drops the pace for the rest)",
    )
    parser.add_argument(
        "--listen",
        action="store_true",
        help="answer control commands (resync, clear) and stay until SIGTERM after the stream",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"{args.subsystem} %(levelname)s %(name)s: %(message)s")
    publisher = TaskPublisher(
        transport.open(args.broker, BusOptions(confirm_publish=True, topology=TOPOLOGY)), args.subsystem
    )
    stop = threading.Event()
    hurry = threading.Event()  # SIGUSR1: the rest unpaced (the test has done what needed a stream)
    wake = threading.Event()  # ends a pacing wait early, on either signal

    def on_signal(signum: int, frame: object) -> None:
        (stop if signum == signal.SIGTERM else hurry).set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    control: threading.Thread | None = None
    if args.listen:
        control = threading.Thread(
            target=publisher.serve_control,
            args=(transport.open(args.broker, BusOptions(confirm_publish=True, topology=TOPOLOGY)), stop),
        )
        control.start()
    began = time.monotonic()
    events = 0
    for start in range(0, args.tasks, CHUNK):
        chunk = range(start, min(start + CHUNK, args.tasks))
        for index in chunk:
            final = expected(args.subsystem, index)
            publisher.create(
                final["verb"], final["tags"], task_id=task_id(args.subsystem, index), state=State.QUEUED
            )
        for step in range(args.updates):
            for index in chunk:
                progress = 90 * (step + 1) // args.updates
                publisher.update(task_id(args.subsystem, index), state=State.RUNNING, progress=progress)
        for index in chunk:
            final = expected(args.subsystem, index)
            publisher.update(
                task_id(args.subsystem, index),
                state=final["state"],
                code=final["code"],
                message=final["message"],
                progress=final["progress"],
            )
        events += len(chunk) * (args.updates + 2)
        if args.events_per_s and not hurry.is_set():
            # Pacing of the workload (so that a test can act while the stream runs), not a wait.
            ahead_s = began + events / args.events_per_s - time.monotonic()
            if ahead_s > 0:
                wake.wait(ahead_s)
        if stop.is_set():
            break
    publisher.flush(120.0)
    print(f"{args.subsystem}: {events} events published and confirmed", file=sys.stderr, flush=True)
    if control is not None:
        stop.wait()
        control.join(30.0)
    publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
