"""How long a call took, to check that it ended at its deadline: behaviour, not speed."""

from __future__ import annotations

import time

# How late a call may end on a loaded 2-core machine (scheduling, a busy broker, a slow CI box).
LATE_S = 2.0
# How early: timers and clocks may round a deadline down a little.
EARLY_S = 0.05


class Stopwatch:
    """``with Stopwatch() as watch: ...``; then ``watch.elapsed_s`` (``time.monotonic()``)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.elapsed_s = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed_s = time.monotonic() - self.started


def assert_ended_by(watch: Stopwatch, deadline_s: float, *, not_before_s: float | None = None) -> None:
    """The timed call ended no later than ``deadline_s`` (plus LATE_S), and no earlier than
    ``not_before_s`` (minus EARLY_S) when given."""
    low = -float("inf") if not_before_s is None else not_before_s - EARLY_S
    assert low <= watch.elapsed_s <= deadline_s + LATE_S, (
        f"ended after {watch.elapsed_s:.3f}s; expected within "
        f"[{'-' if not_before_s is None else f'{low:.3f}'}, {deadline_s + LATE_S:.3f}]s"
    )


def assert_ended_at(watch: Stopwatch, deadline_s: float) -> None:
    """The timed call ended at ``deadline_s``: not before it, and not much after it."""
    assert_ended_by(watch, deadline_s, not_before_s=deadline_s)
