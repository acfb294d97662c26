"""The aggregators serving one broker: each says so every few seconds; any of them can list all."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bus_tasks.core.model import SCHEMA_VERSION, ReplicaBeat, rfc3339

DEFAULT_BEAT_S = 5.0
# A replica not heard for this many intervals is no longer listed as serving.
MISSED_BEATS = 3


@dataclass(slots=True)
class Heard:
    beat: ReplicaBeat
    at: float  # epoch seconds, when it arrived


class Replicas:
    """This aggregator's heartbeats, and what it heard of the others."""

    def __init__(
        self, name: str, *, beat_s: float = DEFAULT_BEAT_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.instance = uuid.uuid4().hex
        self.beat_s = beat_s
        self._clock = clock
        self.started_at = datetime.fromtimestamp(clock(), UTC)
        self.heard: dict[str, Heard] = {}
        self.rpc_queue = ""  # this aggregator's own request queue, once declared

    def beat(self, *, revision: int, tasks: int, stopped: bool = False) -> ReplicaBeat:
        """This aggregator's heartbeat, to publish."""
        return ReplicaBeat(
            schema_version=SCHEMA_VERSION,
            event="aggregator",
            name=self.name,
            instance=self.instance,
            state="stopped" if stopped else "serving",
            revision=revision,
            tasks=tasks,
            rpc_queue=self.rpc_queue,
            started_at=self.started_at,
            interval_s=self.beat_s,
            sent_at=datetime.fromtimestamp(self._clock(), UTC),
        )

    def hear(self, beat: ReplicaBeat) -> None:
        self.heard[beat.instance] = Heard(beat, self._clock())

    def listing(self, *, revision: int, tasks: int) -> list[dict[str, Any]]:
        """Every aggregator serving now, this one first with its figures of this moment."""
        now = self._clock()
        rows = [_row(self.beat(revision=revision, tasks=tasks), now, now)]
        for instance, heard in sorted(self.heard.items(), key=lambda item: item[1].beat.name):
            beat = heard.beat
            stale = now - heard.at >= MISSED_BEATS * beat.interval_s
            if instance == self.instance or beat.state == "stopped" or stale:
                continue
            rows.append(_row(beat, heard.at, now))
        return rows

    def forget_gone(self) -> None:
        """Drop what is no longer serving (stopped, or silent too long): memory stays bounded."""
        now = self._clock()
        gone = [
            i
            for i, h in self.heard.items()
            if h.beat.state == "stopped" or now - h.at >= 10 * MISSED_BEATS * h.beat.interval_s
        ]
        for instance in gone:
            del self.heard[instance]


def _row(beat: ReplicaBeat, heard_at: float, now: float) -> dict[str, Any]:
    return {
        "name": beat.name,
        "instance": beat.instance,
        "revision": beat.revision,
        "tasks": beat.tasks,
        "rpcQueue": beat.rpc_queue,
        "uptimeS": round(now - beat.started_at.timestamp(), 1),
        "lastSeen": rfc3339(heard_at),
    }
