"""Test helpers shipped with the library: run an aggregator in a thread, wait with deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from bus_tasks.aggregator import Aggregator
from bus_tasks.transport import Bus, reset_memory_transport

T = TypeVar("T")

__all__ = ["RunningAggregator", "drain", "reset_memory_transport", "wait_until"]


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float = 0.01,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, which is returned (never ``None``).

    Raises:
        TimeoutError: when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:g}s")
        time.sleep(interval_s)


def drain(connection: Bus, *, timeout_s: float, quiet_s: float = 0.05) -> int:
    """Process deliveries on ``connection`` until none arrives for ``quiet_s``; returns how many rounds.

    Handler errors propagate. Raises TimeoutError if the bus is still busy at ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    rounds = 0
    while connection.drain(quiet_s):
        rounds += 1
        if time.monotonic() >= deadline:
            raise TimeoutError(f"bus still busy after {timeout_s:g}s")
    return rounds


class RunningAggregator:
    """Runs an :class:`Aggregator` in a thread for the span of a ``with`` block.

    Entering waits (with a deadline) until it is ready; leaving stops it and re-raises any
    error the aggregator thread died of.
    """

    def __init__(self, aggregator: Aggregator, *, ready_timeout_s: float = 10.0) -> None:
        self.aggregator = aggregator
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="aggregator", daemon=True)
        self._ready_timeout_s = ready_timeout_s

    def _run(self) -> None:
        try:
            self.aggregator.run(self._stop)
        except BaseException as exc:
            self._error = exc
            self.aggregator.ready.set()

    def __enter__(self) -> Aggregator:
        self._thread.start()
        if not self.aggregator.ready.wait(self._ready_timeout_s):
            self._stop.set()
            raise TimeoutError(f"aggregator not ready within {self._ready_timeout_s:g}s")
        self.check()
        return self.aggregator

    def check(self) -> None:
        """Re-raise the error the aggregator thread died of, if it did."""
        if self._error is not None:
            raise RuntimeError("the aggregator thread died") from self._error

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)
        if self._thread.is_alive():
            raise RuntimeError("the aggregator thread did not stop within 10s")
        self.check()
