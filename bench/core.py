"""Figure 2, core: the pure view's apply against Celery's ``State.event()``, in speed and memory."""

from __future__ import annotations

from typing import Any

from bench import workload
from bench.harness import (
    Child,
    Figure,
    Sizes,
    at_least,
    at_most,
    check,
    fmt_bytes,
    fmt_rate,
    median,
    rate,
    retained_rss,
    say,
    side_by_side,
    timed,
)
from bus_tasks.core.view import TaskView

TASKS = Sizes(full=100_000, quick=3_000)
MANY = Sizes(full=1_000_000, quick=10_000)  # the memory figure again, at this size
REPS = Sizes(full=3, quick=2)  # 5 until round 3: the figure was 3.07-3.45 in every recorded run (target 2)
WARM_UP_TASKS = 1_000


def celery_state(n_tasks: int) -> Any:
    """Celery's ``State``, large enough to hold every task (its default keeps only 10,000)."""
    from celery.events.state import State

    return State(max_tasks_in_memory=max(n_tasks, 1))


def build_ours(n_tasks: int) -> TaskView:
    view = TaskView()
    for event in workload.events(n_tasks):
        view.apply(event)
    return view


def build_celery(n_tasks: int) -> Any:
    state = celery_state(n_tasks)
    for event in workload.celery_events(n_tasks):
        state.event(event)
    return state


class MemoryProbe:
    """Runs in a fresh interpreter: the resident memory one side keeps per stored task."""

    def __init__(self, side: str) -> None:
        self._build = {"ours": build_ours, "celery": build_celery}[side]
        self._held: Any = None

    def bytes_per_task(self, n_tasks: int) -> float:
        self._build(WARM_UP_TASKS)  # imports, validators and caches are not per-task memory
        retained, self._held = retained_rss(lambda: self._build(n_tasks))
        return retained / n_tasks


def memory_row(name: str, n: int, ours_bytes: float, celery_bytes: float) -> Figure:
    say(f"  {name}: ours {ours_bytes:,.0f} B/task, celery {celery_bytes:,.0f} B/task")
    return Figure(
        name,
        f"{fmt_bytes(ours_bytes)}/task",
        f"{fmt_bytes(celery_bytes)}/task",
        ours_bytes / celery_bytes,
        at_most(0.25),
        f"{n:,} tasks",
        note="resident memory (RSS) retained per stored task, each side built alone in a fresh process",
    )


def bytes_per_task(side: str, n: int) -> float:
    """One side's memory per task, built in a fresh interpreter of its own."""
    with Child(MemoryProbe, side) as probe:
        result: float = probe.call("bytes_per_task", n)
    return result


def run(quick: bool) -> list[Figure]:
    n = TASKS.pick(quick)
    many = MANY.pick(quick)
    reps = REPS.pick(quick)
    sizes = f"{n:,} tasks x 3 events, {reps} reps"

    # Memory: each side built alone in a fresh interpreter, two at a time (one core each).
    # Celery's 1,000,000 is the longest build (~100 s against ours' ~60 s on a quiet machine):
    # the smaller pair, one after the other, and the decoding of the speed figure's events run
    # in the core that ours leaves free, instead of after it (a fifth of the figure's time).
    with Child(MemoryProbe, "celery") as celery_many:
        celery_many.send("bytes_per_task", many)
        ours_many = bytes_per_task("ours", many)
        ours_n = bytes_per_task("ours", n)
        celery_n = bytes_per_task("celery", n)
        # Speed: events decoded beforehand on both sides; only apply / State.event is timed.
        build_s, ours_events = timed(lambda: list(workload.events(n)))
        celery_template = list(workload.celery_events(n))
        celery_many_bytes = celery_many.result()
    memory = [
        memory_row("core memory", n, ours_n, celery_n),
        memory_row(f"core memory {many:,}", many, ours_many, celery_many_bytes),
    ]
    say(f"  core: {len(ours_events):,} events built in {build_s:.1f}s")

    def ours() -> float:
        view = TaskView()
        apply = view.apply
        seconds, _ = timed(lambda: [apply(e) for e in ours_events])
        check(len(view) == n, f"the view holds {len(view)} tasks, not {n}")
        return rate(len(ours_events), seconds)

    def celery() -> float:
        state = celery_state(n)
        handle = state.event
        fresh = [dict(e) for e in celery_template]  # State.event() updates the dicts it is given
        seconds, _ = timed(lambda: [handle(e) for e in fresh])
        check(len(state.tasks) == n, f"celery's State holds {len(state.tasks)} tasks, not {n}")
        return rate(len(fresh), seconds)

    speed = side_by_side(ours, celery, reps)

    apply = Figure(
        "core apply",
        fmt_rate(median(speed.ours), "ev"),
        fmt_rate(median(speed.baseline), "ev"),
        speed.ratio,
        at_least(2.0),
        sizes,
        note=f"TaskView.apply vs celery State.event, events decoded beforehand; {speed.spread()}",
    )
    return [apply, *memory]
