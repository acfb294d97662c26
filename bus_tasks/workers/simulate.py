"""Composition root of ``bus-tasks simulate``: a simulated storage or gluster subsystem."""

from __future__ import annotations

import logging
import random
from collections import deque

from bus_tasks.config import Settings
from bus_tasks.errors import UnknownTask
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.subsystem.runner import SubsystemRunner
from bus_tasks.subsystem.simulated import SimulatedSubsystem, start_gluster_tasks, start_storage_tasks
from bus_tasks.workers import wiring

log = logging.getLogger("bus_tasks.simulate")

# The kinds of subsystem simulated, and the name each publishes under unless given one.
SUBSYSTEMS = {"storage": "vdsm", "gluster": "gluster"}
TASKS_PER_ROUND = 6
INTERVAL_S = 1.0
KEEP_ROUNDS = 2


def simulate(
    settings: Settings,
    *,
    kind: str,
    subsystem: str | None = None,
    tasks: int = TASKS_PER_ROUND,
    interval_s: float = INTERVAL_S,
    keep_rounds: int = KEEP_ROUNDS,
) -> int:
    """Start rounds of tasks and run them through their states until SIGTERM or SIGINT.

    Nobody may ever clear these tasks, so the done tasks of rounds older than the last
    ``keep_rounds`` are cleared here: the view of a long-running simulation stays bounded.
    """
    wiring.warn_if_identity_off(settings, log)
    stop = wiring.stop_on_signals(log)
    name = subsystem or SUBSYSTEMS[kind]
    # A second simulator of the name is refused at open; main() prints it in one line.
    with SubsystemRunner.open(
        name, wiring.connector(settings, stop), stop=stop, trust=settings.trust
    ) as runner:
        publisher = runner.publisher
        sim = SimulatedSubsystem(publisher)
        runner.announce()
        log.info(
            "simulating %s as subsystem %s: %d tasks per round, a step every %gs",
            kind,
            name,
            tasks,
            interval_s,
        )
        rng = random.Random()
        rounds: deque[list[str]] = deque()
        round_no = 0

        def turn() -> None:
            nonlocal round_no
            if not sim.busy:
                if len(rounds) >= keep_rounds:
                    _clear_done(publisher, rounds)
                round_no += 1
                if kind == "storage":
                    started = start_storage_tasks(sim, tasks, rng)
                else:
                    started = start_gluster_tasks(sim, [f"gv{round_no}-{i}" for i in range(tasks)], rng)
                rounds.append(started)
            sim.step()

        runner.run(turn, interval_s)
    log.info("simulator %s stopped", name)
    return 0


def _clear_done(publisher: TaskPublisher, rounds: deque[list[str]]) -> None:
    """Clear the done tasks of the oldest round; one still running (reverted) waits for the next."""
    oldest = rounds.popleft()
    waiting = []
    for task_id in oldest:
        try:
            if publisher.get(task_id).state.is_done:
                publisher.clear(task_id)
            else:
                waiting.append(task_id)
        except UnknownTask:
            pass  # already cleared through the aggregator
    if waiting:
        if rounds:
            rounds[0].extend(waiting)
        else:
            rounds.append(waiting)
