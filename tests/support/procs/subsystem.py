"""A subsystem process for end-to-end tests: runs N tasks to completion, obeys control commands.

It exits 0 once every task it created has been cleared by the aggregator (so the clear
notifications reached it), or 1 at its deadline.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time

from bus_tasks import transport
from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.transport import BusOptions, TopologyOptions

# The layout of the test's deployment (the tests of the queue layout set it for every process).
TOPOLOGY = TopologyOptions(
    event_log="queue" if os.environ.get("BUS_TASKS_EVENT_LOG") == "queue" else "stream"
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--subsystem", required=True)
    parser.add_argument("--verb", default="copyImage")
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--fail-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=240.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"{args.subsystem} %(levelname)s %(name)s: %(message)s")
    rng = random.Random(args.seed)
    stop = threading.Event()
    publisher = TaskPublisher(
        transport.open(args.broker, BusOptions(confirm_publish=True, topology=TOPOLOGY)), args.subsystem
    )
    lock = threading.Lock()
    steps: dict[str, list[dict[str, object]]] = {}

    def on_stop(task_id: str) -> None:
        with lock:
            steps[task_id] = [{"state": State.FAILED, "code": 411, "message": "Task is aborted: stopped"}]

    publisher.on_stop(on_stop)
    control = threading.Thread(
        target=publisher.serve_control,
        args=(transport.open(args.broker, BusOptions(confirm_publish=True, topology=TOPOLOGY)), stop),
    )
    control.start()
    deadline = time.monotonic() + args.deadline
    created = 0
    try:
        while time.monotonic() < deadline:
            if created < args.tasks:
                for _ in range(min(10, args.tasks - created)):
                    record = publisher.create(args.verb, args.tag, state=State.QUEUED)
                    script: list[dict[str, object]] = [{"state": State.RUNNING, "progress": 0}]
                    script += [{"progress": p} for p in range(10, 100, rng.choice((30, 45)))]
                    if created % args.fail_every == args.fail_every - 1:
                        script.append({"state": State.FAILED, "code": 205, "message": "Cannot create volume"})
                    else:
                        script.append({"state": State.FINISHED, "progress": 100, "message": "done"})
                    with lock:
                        steps[record.id] = script
                    created += 1
            with lock:
                due = [
                    (task_id, script.pop(0))
                    for task_id, script in steps.items()
                    if script and rng.random() < 0.5
                ]
                for task_id in [t for t, s in steps.items() if not s]:
                    del steps[task_id]
            for task_id, change in due:
                if task_id in publisher:
                    publisher.update(task_id, **change)  # type: ignore[arg-type]
            publisher.flush(30.0)
            if created == args.tasks and not publisher.tasks:
                return 0
            time.sleep(0.02)  # pacing of the simulated work, not synchronisation
        print(f"{args.subsystem}: deadline with {len(publisher.tasks)} tasks not cleared", file=sys.stderr)
        return 1
    finally:
        stop.set()
        control.join(10.0)
        publisher.close()


if __name__ == "__main__":
    sys.exit(main())
