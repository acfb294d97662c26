"""Composition root of ``bus-tasks simulate``: a simulated storage or gluster subsystem."""

from __future__ import annotations

import random
import signal
import threading
from types import FrameType

from bus_tasks.bus import BusConnection
from bus_tasks.config import Settings
from bus_tasks.publisher import TaskPublisher
from bus_tasks.simulate import SimulatedSubsystem, start_gluster_tasks, start_storage_tasks


def simulate(settings: Settings, *, kind: str, subsystem: str | None, tasks: int, interval_s: float) -> int:
    """Start rounds of tasks and run them through their states until SIGTERM or SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def connect() -> BusConnection:
        return BusConnection(
            settings.broker,
            confirm_publish=True,
            heartbeat_s=settings.heartbeat_s,
            connect_timeout_s=settings.connect_timeout_s,
            redis_key_prefix=settings.redis_key_prefix,
        )

    name = subsystem or ("vdsm" if kind == "storage" else "gluster")
    publisher = TaskPublisher(connect(), name)
    sim = SimulatedSubsystem(publisher)
    control = threading.Thread(target=publisher.serve_control, args=(connect(), stop), daemon=True)
    control.start()
    rng = random.Random()
    round_no = 0
    while not stop.is_set():
        if not sim.busy:
            round_no += 1
            if kind == "storage":
                start_storage_tasks(sim, tasks, rng)
            else:
                start_gluster_tasks(sim, [f"gv{round_no}-{i}" for i in range(tasks)], rng)
        sim.step()
        stop.wait(interval_s)
    control.join(5.0)
    publisher.connection.close()
    return 0
