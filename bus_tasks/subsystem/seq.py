"""Sequence numbers of a subsystem's events: strictly increasing, across restarts too."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class SeqClock:
    """Strictly increasing sequence numbers: microseconds of the wall clock, bumped past the last.

    With ``path``, a high-water mark is leased ahead in blocks and kept on disk, so numbers keep
    increasing across restarts even if the clock steps back.
    """

    def __init__(self, path: Path | None = None, *, lease: int = 10_000_000) -> None:
        self._path = path
        self._lease = lease
        self._last = 0
        self._leased = 0
        self._lock = threading.Lock()
        if path is not None and path.is_file():
            text = path.read_text().strip()
            self._last = self._leased = int(text) if text else 0

    def advance_past(self, value: int) -> None:
        """Make every later number larger than ``value`` (a seq another process used for a task
        this clock now numbers, e.g. a record taken over from the view)."""
        with self._lock:
            self._last = max(self._last, value)

    def next(self) -> int:
        with self._lock:
            value = max(self._last + 1, time.time_ns() // 1000)
            if self._path is not None and value > self._leased:
                self._leased = value + self._lease
                tmp = self._path.with_suffix(".tmp")
                tmp.write_text(str(self._leased))
                os.replace(tmp, self._path)
            self._last = value
            return value
