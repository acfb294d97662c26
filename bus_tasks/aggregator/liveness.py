"""Which subsystems are alive: their heartbeats, and the tasks the view holds for each."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bus_tasks.core.model import Heartbeat, rfc3339

# A subsystem is lost once this many of its heartbeat intervals passed without one.
MISSED_BEATS = 3
# Before its first heartbeat reached this aggregator, a subsystem with tasks is "unknown" this
# long after the aggregator started (it may have heartbeats in flight), then "lost".
DEFAULT_GRACE_S = 15.0

SubsystemState = Literal["alive", "lost", "stopped", "unknown"]


@dataclass(slots=True)
class Seen:
    """The last heartbeat of one subsystem, and when it arrived (epoch seconds)."""

    beat: Heartbeat
    at: float


class Liveness:
    """The last heartbeat of each subsystem, and the state it implies now."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        grace_s: float = DEFAULT_GRACE_S,
        owned: dict[str, str] | None = None,
    ) -> None:
        """Args:
        owned: subsystems this aggregator owns itself (name -> what it is), always alive.
        """
        self._clock = clock
        self._started = clock()
        self._grace_s = grace_s
        self._owned = dict(owned or {})
        self.seen: dict[str, Seen] = {}

    def beat(self, heartbeat: Heartbeat) -> None:
        self.seen[heartbeat.subsystem] = Seen(heartbeat, self._clock())

    def state(self, subsystem: str, now: float | None = None) -> SubsystemState:
        now = self._clock() if now is None else now
        if subsystem in self._owned:
            return "alive"
        seen = self.seen.get(subsystem)
        if seen is None:
            return "unknown" if now - self._started < self._grace_s else "lost"
        if seen.beat.state == "stopped":
            return "stopped"
        return "alive" if now - seen.at < MISSED_BEATS * seen.beat.interval_s else "lost"

    def listing(self, tasks_by_subsystem: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Every subsystem heard from or holding tasks: ``{name: {...}}``, sorted by name."""
        now = self._clock()
        listed: dict[str, dict[str, Any]] = {}
        for name in sorted({*self.seen, *tasks_by_subsystem, *self._owned}):
            seen = self.seen.get(name)
            beat = seen.beat if seen is not None else None
            listed[name] = {
                "subsystem": name,
                "state": self.state(name, now),
                "tasks": tasks_by_subsystem.get(name, 0),
                "lastSeen": rfc3339(seen.at) if seen is not None else None,
                "instance": beat.instance if beat is not None else self._owned.get(name, ""),
                "host": beat.host if beat is not None else "",
                "pid": beat.pid if beat is not None else 0,
                "heartbeatS": beat.interval_s if beat is not None else None,
            }
        return listed
