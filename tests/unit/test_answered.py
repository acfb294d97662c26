"""What a subsystem remembers of the control calls it carried out, for their repeats (SPEC 17),
and the call key that names a call across its caller's re-sends."""

from __future__ import annotations

from bus_tasks.aggregator.authorization import caller_of
from bus_tasks.protocol.context import CallContext
from bus_tasks.subsystem.repeats import Answered


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_found_by_its_key_command_and_task_only() -> None:
    answered = Answered()
    answered.remember("k1", "stop", "t1", True)
    assert answered.get("k1", "stop", "t1") is True
    assert answered.get("k1", "revert", "t1") is None  # the same key for another call: not it
    assert answered.get("k1", "stop", "t2") is None
    assert answered.get("k2", "stop", "t1") is None


def test_answers_are_forgotten_after_their_time() -> None:
    clock = Clock()
    answered = Answered(ttl_s=60.0, clock=clock)
    answered.remember("old", "stop", "t1", True)
    clock.now += 30.0
    answered.remember("new", "retag", "t2", ["a"])
    clock.now += 31.0  # old is 61 s old, new 31 s
    assert answered.get("old", "stop", "t1") is None
    assert answered.get("new", "retag", "t2") == ["a"]
    assert len(answered) == 1


def test_the_oldest_answers_go_beyond_the_bound() -> None:
    answered = Answered(max_entries=3)
    for n in range(5):
        answered.remember(f"k{n}", "stop", "t", True)
    assert len(answered) == 3
    assert [answered.get(f"k{n}", "stop", "t") for n in range(5)] == [None, None, True, True, True]


def test_a_call_key_names_the_caller_the_request_and_the_member() -> None:
    alice = CallContext("alice", "amqp", None, "c1")
    assert alice.call_key("c1") == "alice/c1/'c1'"
    assert alice.call_key(7) != alice.call_key("7")  # a batch member's id, as JSON told them apart
    assert CallContext("bob", "amqp", None, "c1").call_key("c1") != alice.call_key("c1")
    assert CallContext("alice", "amqp", None, None).call_key("c1") is None  # no correlation id
    assert alice.call_key(None) is None  # a notification: nobody waits, nothing to repeat


def test_the_resent_header_and_the_correlation_id_reach_the_call_context() -> None:
    first = caller_of("guest", {}, front_doors=None, deadline=None, correlation_id="c1")
    again = caller_of(
        "guest", {"x-bus-tasks-resent": True}, front_doors=None, deadline=None, correlation_id="c1"
    )
    assert (first.resent, again.resent) == (False, True)
    assert first.call_key(1) == again.call_key(1)
    door = caller_of(
        "stomp-door",
        {"x-bus-tasks-door": "stomp", "x-bus-tasks-on-behalf-of": "eve", "x-bus-tasks-resent": True},
        front_doors={"stomp-door"},
        deadline=None,
        correlation_id="c2",
    )
    assert (door.identity, door.resent, door.call_key(1)) == ("eve", True, "eve/c2/1")
