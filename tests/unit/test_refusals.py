"""Messages the broker refuses for good: told apart from a lost connection, dropped from the
outbox (never re-sent), and a change feed that splits a turn's changes under a size."""

from __future__ import annotations

from typing import Any

import pytest
from amqp.exceptions import AccessRefused, ConnectionForced, PreconditionFailed

from bus_tasks.aggregator.changes import chunked
from bus_tasks.transport.kombu.refusals import Refusal, classify
from bus_tasks.transport.outbox import Outbox, Outgoing, Returned

TOO_LARGE = "PRECONDITION_FAILED - message size 2000002 is larger than configured max size 1048576"


def message(body: bytes, exchange: str = "", routing_key: str = "reply.1") -> Outgoing:
    return Outgoing(body, exchange, routing_key, {}, None, None, None, False)


def test_a_message_over_the_brokers_size_is_a_refusal_naming_its_limit() -> None:
    refusal = classify(PreconditionFailed(reply_text=TOO_LARGE, method_sig=(60, 40)))
    assert refusal == Refusal(f"406 {TOO_LARGE}", size=2_000_002, max_size=1_048_576)
    assert refusal.matches(message(b"x" * 1_048_577))
    assert not refusal.matches(message(b"x" * 1_048_576))


@pytest.mark.parametrize(
    ("named", "exchange"), [("bus_tasks.control", "bus_tasks.control"), ("amq.default", "")]
)
def test_access_refused_to_an_exchange_is_a_refusal_of_every_message_to_it(named: str, exchange: str) -> None:
    text = f"ACCESS_REFUSED - access to exchange '{named}' in vhost 'v' refused for user 'u'"
    refusal = classify(AccessRefused(reply_text=text, method_sig=(60, 40)))
    assert refusal == Refusal(f"403 {text}", exchange=exchange)
    assert refusal.matches(message(b"{}", exchange=exchange))
    assert not refusal.matches(message(b"{}", exchange="bus_tasks.events"))


@pytest.mark.parametrize(
    "error",
    [
        None,
        ConnectionForced(reply_text="CONNECTION_FORCED - broker forced connection closure"),
        PreconditionFailed(reply_text="PRECONDITION_FAILED - inequivalent arg 'x-queue-type'"),
        AccessRefused(reply_text="ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"),
        OSError("connection reset"),
    ],
)
def test_a_lost_connection_or_another_error_is_no_refusal(error: Any) -> None:
    assert classify(error) is None


def test_refused_messages_leave_the_outbox_sent_or_not_and_the_rest_stay_in_order() -> None:
    outbox = Outbox()
    for body in (b"a", b"x" * 10, b"b", b"y" * 10):
        outbox.add(message(body))
    outbox.sent()
    outbox.sent()  # "a" and the first large one wait for their confirm; the rest are unsent
    gone = outbox.refuse(lambda m: len(m.body) > 5, "406 too large")
    assert [m.body for m in gone] == [b"x" * 10, b"y" * 10]
    assert outbox.take_refused() == [Returned("", "reply.1", "406 too large")] * 2
    assert outbox.take_refused() == []
    outbox.lost()
    sent = []
    while (head := outbox.head()) is not None:
        outbox.sent()
        sent.append(head.body)
    assert sent == [b"a", b"b"]


def test_a_turns_changes_are_split_under_the_size_each_message_ending_at_its_last_revision() -> None:
    pending = [(1, b"a" * 10), (2, b"b" * 10), (3, b"c" * 10), (5, b"e" * 10)]
    assert chunked(pending, 9, 25) == [(0, 2, [b"a" * 10, b"b" * 10]), (0, 9, [b"c" * 10, b"e" * 10])]
    assert chunked(pending[:3], 3, 15) == [(0, 1, [b"a" * 10]), (0, 2, [b"b" * 10]), (0, 3, [b"c" * 10])]
    assert chunked(pending[:3], 3, 1000) == [(0, 3, [b"a" * 10, b"b" * 10, b"c" * 10])]
    assert chunked([], 7, 1000) == [(0, 7, [])]  # a bookmark: the revision moved, nothing changed


def test_a_change_too_large_for_any_message_leaves_a_gap_that_watchers_replay() -> None:
    pending = [(1, b"a" * 10), (2, b"b" * 100), (3, b"c" * 10)]
    # The message after the left-out change claims to follow revision 2: a watcher at 1 replays.
    assert chunked(pending, 4, 25) == [(0, 1, [b"a" * 10]), (2, 4, [b"c" * 10])]
    assert chunked(pending[:2], 2, 25) == [(0, 1, [b"a" * 10]), (2, 2, [])]
