"""Subsystems seen alive by their heartbeats; lost after missed beats (SPEC 11)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus_tasks.aggregator.liveness import MISSED_BEATS, Liveness
from bus_tasks.core.model import SCHEMA_VERSION, Heartbeat, decode_heartbeat
from bus_tasks.errors import EventRejected


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def beat(subsystem: str = "vdsm", *, state: str = "alive", interval_s: float = 5.0) -> Heartbeat:
    return Heartbeat.model_validate(
        {
            "schema": SCHEMA_VERSION,
            "event": "heartbeat",
            "subsystem": subsystem,
            "instance": "i-1",
            "state": state,
            "interval_s": interval_s,
            "tasks": 2,
            "host": "host1",
            "pid": 42,
            "sent_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_subsystem_that_beats_is_alive_until_it_misses_its_beats(clock: Clock) -> None:
    liveness = Liveness(clock=clock)
    liveness.beat(beat(interval_s=5.0))

    clock.now += MISSED_BEATS * 5.0 - 0.1
    assert liveness.state("vdsm") == "alive"
    clock.now += 0.2
    assert liveness.state("vdsm") == "lost"


def test_a_subsystem_that_said_it_stopped_is_stopped_not_lost(clock: Clock) -> None:
    liveness = Liveness(clock=clock)
    liveness.beat(beat(state="stopped"))
    clock.now += 3600

    assert liveness.state("vdsm") == "stopped"


def test_a_subsystem_never_heard_is_unknown_during_the_grace_then_lost(clock: Clock) -> None:
    liveness = Liveness(clock=clock, grace_s=15.0)

    assert liveness.state("gluster") == "unknown"
    clock.now += 15.0
    assert liveness.state("gluster") == "lost"


def test_the_listing_names_every_subsystem_heard_or_holding_tasks_with_the_views_counts(clock: Clock) -> None:
    liveness = Liveness(clock=clock, grace_s=0.0, owned={"test": "bus-tasks serve (test tasks)"})
    liveness.beat(beat("vdsm"))

    listed = liveness.listing({"vdsm": 3, "gluster": 1})

    assert list(listed) == ["gluster", "test", "vdsm"]
    assert listed["vdsm"] == {
        "subsystem": "vdsm",
        "state": "alive",
        "tasks": 3,
        "lastSeen": "1970-01-12T13:46:40.000Z",
        "instance": "i-1",
        "host": "host1",
        "pid": 42,
        "heartbeatS": 5.0,
    }
    assert listed["gluster"]["state"] == "lost"
    assert listed["gluster"]["lastSeen"] is None
    assert listed["test"]["state"] == "alive"
    assert listed["test"]["instance"] == "bus-tasks serve (test tasks)"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'{"schema":1,"event":"heartbeat","subsystem":"Bad Name","instance":"i","interval_s":5,'
            b'"sent_at":"2026-01-01T00:00:00Z"}',
            "subsystem",
        ),
        (
            b'{"schema":1,"event":"heartbeat","subsystem":"vdsm","instance":"i","interval_s":0,'
            b'"sent_at":"2026-01-01T00:00:00Z"}',
            "interval_s",
        ),
        (b"x" * 5000, "too large"),
    ],
)
def test_a_bad_heartbeat_is_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(EventRejected) as caught:
        decode_heartbeat(body)
    assert reason in caught.value.reason
