"""The aggregators serving a broker, as any of them lists them (``bus-tasks aggregators``)."""

from __future__ import annotations

import orjson
import pytest

from bus_tasks.aggregator.replicas import MISSED_BEATS, Replicas
from bus_tasks.core.model import decode_replica_beat
from bus_tasks.errors import EventRejected


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_an_aggregator_lists_itself_first_then_the_others_it_heard_by_name(clock: Clock) -> None:
    one, two, three = (Replicas(name, beat_s=5.0, clock=clock) for name in ("b", "c", "a"))
    clock.now += 30
    one.hear(two.beat(revision=7, tasks=3))
    one.hear(three.beat(revision=6, tasks=3))
    one.hear(one.beat(revision=7, tasks=3))  # its own heartbeat comes back too

    listed = one.listing(revision=8, tasks=4)

    assert [(r["name"], r["revision"], r["tasks"]) for r in listed] == [("b", 8, 4), ("a", 6, 3), ("c", 7, 3)]
    assert listed[0]["uptimeS"] == 30.0
    assert listed[0]["lastSeen"].endswith("Z")


def test_an_aggregator_silent_for_three_intervals_or_stopped_is_no_longer_listed(clock: Clock) -> None:
    one, two, three = (
        Replicas("one", clock=clock),
        Replicas("two", clock=clock),
        Replicas("three", clock=clock),
    )
    one.hear(two.beat(revision=1, tasks=0))
    one.hear(three.beat(revision=1, tasks=0, stopped=True))

    assert [r["name"] for r in one.listing(revision=1, tasks=0)] == ["one", "two"]
    clock.now += MISSED_BEATS * two.beat_s
    assert [r["name"] for r in one.listing(revision=1, tasks=0)] == ["one"]
    one.forget_gone()
    assert set(one.heard) == {two.instance}  # silent a little while: kept, in case it is back


def test_a_heartbeat_round_trips_and_a_bad_one_is_rejected_with_a_reason(clock: Clock) -> None:
    beat = Replicas("one", clock=clock).beat(revision=3, tasks=2)

    assert decode_replica_beat(orjson.dumps(beat.to_wire())) == beat
    with pytest.raises(EventRejected, match="revision"):
        decode_replica_beat(orjson.dumps({**beat.to_wire(), "revision": -1}))
