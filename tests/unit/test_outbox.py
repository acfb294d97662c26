"""The publisher-confirm state machine: publish order, acks and nacks by tag, a lost channel, returns."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from amqp.exceptions import ChannelError, RecoverableConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from bus_tasks.transport.kombu import publishing
from bus_tasks.transport.kombu.consumers import Inbox
from bus_tasks.transport.kombu.publishing import NACKS_BEFORE_NEW_CONNECTION, Sender
from bus_tasks.transport.outbox import Outbox, Outgoing, Returned


def message(name: str, on_confirm: Callable[[], None] | None = None) -> Outgoing:
    return Outgoing(
        body=name.encode(),
        exchange="",
        routing_key="bus_tasks.dead",
        headers={},
        reply_to=None,
        correlation_id=None,
        expiration_s=None,
        persistent=True,
        on_confirm=on_confirm,
    )


def recorder(log: list[str], name: str) -> Callable[[], None]:
    def confirmed() -> None:
        log.append(name)

    return confirmed


def send_all(outbox: Outbox) -> list[tuple[int, bytes]]:
    """Send every waiting message, as the connection's pump does; (tag, body) in send order."""
    sent = []
    while (head := outbox.head()) is not None:
        sent.append((outbox.sent(), head.body))
    return sent


def outbox_of(*names: str, log: list[str] | None = None) -> Outbox:
    outbox = Outbox()
    for name in names:
        outbox.add(message(name, recorder(log, name) if log is not None else None))
    return outbox


def counts(outbox: Outbox) -> tuple[int, int, int]:
    return len(outbox), outbox.unsent, outbox.unconfirmed


def run(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


# -- sending -------------------------------------------------------------------------------


def test_a_new_outbox_is_empty_and_has_no_head() -> None:
    outbox = Outbox()

    assert counts(outbox) == (0, 0, 0)
    assert outbox.head() is None


def test_messages_go_out_in_publish_order_with_tags_counting_from_one() -> None:
    outbox = outbox_of("a", "b", "c")

    assert counts(outbox) == (3, 3, 0)
    assert send_all(outbox) == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert counts(outbox) == (3, 0, 3)
    assert outbox.head() is None


def test_head_is_the_oldest_unsent_message_and_stays_until_it_is_sent() -> None:
    outbox = Outbox()
    first, second = message("a"), message("b")
    outbox.add(first)
    outbox.add(second)

    assert outbox.head() is first
    assert outbox.head() is first  # looking does not send
    assert counts(outbox) == (2, 2, 0)

    assert outbox.sent() == 1
    assert outbox.head() is second
    assert counts(outbox) == (2, 1, 1)


def test_a_message_added_after_others_were_sent_gets_the_next_tag() -> None:
    outbox = outbox_of("a", "b")
    assert send_all(outbox) == [(1, b"a"), (2, b"b")]

    outbox.add(message("c"))

    assert counts(outbox) == (3, 1, 2)
    assert send_all(outbox) == [(3, b"c")]


def test_sent_with_nothing_waiting_to_be_sent_raises_lookup_error() -> None:
    outbox = Outbox()
    with pytest.raises(LookupError, match="no message waits to be sent"):
        outbox.sent()

    outbox.add(message("a"))
    outbox.sent()
    with pytest.raises(LookupError, match="no message waits to be sent"):
        outbox.sent()
    assert counts(outbox) == (1, 0, 1)  # the failed call changed nothing


# -- acks ----------------------------------------------------------------------------------


def test_a_single_ack_confirms_only_its_tag_and_returns_its_callback() -> None:
    log: list[str] = []
    outbox = outbox_of("a", "b", "c", log=log)
    send_all(outbox)

    callbacks = outbox.ack(2)

    assert len(callbacks) == 1
    assert log == []  # the outbox returns callbacks, it never runs them
    run(callbacks)
    assert log == ["b"]
    assert counts(outbox) == (2, 0, 2)
    run(outbox.ack(1))
    run(outbox.ack(3))
    assert log == ["b", "a", "c"]
    assert counts(outbox) == (0, 0, 0)


def test_a_multiple_ack_confirms_every_earlier_tag_and_returns_their_callbacks_in_order() -> None:
    log: list[str] = []
    outbox = outbox_of("a", "b", "c", "d", log=log)
    send_all(outbox)

    callbacks = outbox.ack(3, multiple=True)

    assert len(callbacks) == 3
    run(callbacks)
    assert log == ["a", "b", "c"]
    assert counts(outbox) == (1, 0, 1)  # "d" still waits for its confirm
    run(outbox.ack(4))
    assert log == ["a", "b", "c", "d"]
    assert counts(outbox) == (0, 0, 0)


def test_a_multiple_ack_skips_tags_confirmed_before_and_leaves_unsent_messages_alone() -> None:
    log: list[str] = []
    outbox = outbox_of("a", "b", "c", "d", "e", log=log)
    for _ in range(4):
        outbox.sent()
    run(outbox.ack(2))

    run(outbox.ack(4, multiple=True))

    assert log == ["b", "a", "c", "d"]
    assert counts(outbox) == (1, 1, 0)
    head = outbox.head()
    assert head is not None
    assert head.body == b"e"


def test_a_multiple_ack_past_the_last_sent_tag_confirms_everything_sent_and_nothing_unsent() -> None:
    log: list[str] = []
    outbox = outbox_of("a", "b", "c", log=log)
    outbox.sent()
    outbox.sent()

    run(outbox.ack(99, multiple=True))

    assert log == ["a", "b"]
    assert counts(outbox) == (1, 1, 0)


def test_an_ack_for_an_unknown_or_already_confirmed_tag_is_a_no_op() -> None:
    log: list[str] = []
    outbox = outbox_of("a", "b", "c", log=log)
    outbox.sent()
    outbox.sent()
    run(outbox.ack(1))
    before = counts(outbox)

    assert outbox.ack(1) == []  # confirmed already
    assert outbox.ack(1, multiple=True) == []  # nothing left at or below 1
    assert outbox.ack(3) == []  # "c" is not sent yet: no tag 3 on the channel
    assert outbox.ack(0) == []
    assert outbox.ack(17) == []

    assert counts(outbox) == before == (2, 1, 1)
    assert log == ["a"]


def test_an_ack_of_a_message_without_callback_confirms_it_and_returns_nothing_for_it() -> None:
    log: list[str] = []
    outbox = Outbox()
    outbox.add(message("a"))
    outbox.add(message("b", recorder(log, "b")))
    outbox.add(message("c"))
    send_all(outbox)

    callbacks = outbox.ack(3, multiple=True)

    assert len(callbacks) == 1
    run(callbacks)
    assert log == ["b"]
    assert counts(outbox) == (0, 0, 0)


# -- nacks ---------------------------------------------------------------------------------


def test_a_nack_puts_the_message_back_at_the_front_of_the_line_ahead_of_messages_never_sent() -> None:
    outbox = outbox_of("a", "b", "c", "d")
    outbox.sent()  # a: 1
    outbox.sent()  # b: 2

    assert len(outbox.nack(1)) == 1

    assert counts(outbox) == (4, 3, 1)
    assert send_all(outbox) == [(3, b"a"), (4, b"c"), (5, b"d")]
    assert counts(outbox) == (4, 0, 4)


def test_a_multiple_nack_puts_every_refused_message_back_in_their_original_order() -> None:
    log: list[str] = []
    outbox = outbox_of("a", "b", "c", "d", "e", log=log)
    for _ in range(4):
        outbox.sent()  # a..d: tags 1..4; "e" never sent

    assert len(outbox.nack(3, multiple=True)) == 3

    assert counts(outbox) == (5, 4, 1)
    assert send_all(outbox) == [(5, b"a"), (6, b"b"), (7, b"c"), (8, b"e")]
    # The refused messages keep their callbacks: they run once the re-sent copy is confirmed.
    run(outbox.ack(8, multiple=True))
    assert log == ["d", "a", "b", "c", "e"]
    assert counts(outbox) == (0, 0, 0)


def test_a_nack_only_refuses_tags_still_unconfirmed() -> None:
    outbox = outbox_of("a", "b", "c")
    send_all(outbox)
    outbox.ack(2)

    assert len(outbox.nack(3, multiple=True)) == 2  # "a" and "c"; "b" was confirmed already

    assert counts(outbox) == (2, 2, 0)
    assert send_all(outbox) == [(4, b"a"), (5, b"c")]


def test_a_nack_for_an_unknown_or_already_confirmed_tag_is_a_no_op() -> None:
    outbox = outbox_of("a", "b")
    outbox.sent()
    outbox.ack(1)

    assert len(outbox.nack(1)) == 0
    assert len(outbox.nack(1, multiple=True)) == 0
    assert len(outbox.nack(2)) == 0  # "b" not sent yet
    assert counts(outbox) == (1, 1, 0)
    assert send_all(outbox) == [(2, b"b")]


def test_a_second_nack_of_a_re_sent_message_puts_it_back_again() -> None:
    outbox = outbox_of("a", "b")
    outbox.sent()  # a: 1
    outbox.nack(1)
    assert send_all(outbox) == [(2, b"a"), (3, b"b")]

    assert len(outbox.nack(2)) == 1
    assert len(outbox.nack(2)) == 0  # tag 2 is gone now: it names no message

    assert send_all(outbox) == [(4, b"a")]
    assert counts(outbox) == (2, 0, 2)


# -- a lost channel ------------------------------------------------------------------------


def test_lost_puts_every_unconfirmed_message_back_in_order_ahead_of_the_unsent_ones() -> None:
    outbox = outbox_of("a", "b", "c", "d", "e")
    for _ in range(3):
        outbox.sent()  # a, b, c: tags 1..3
    outbox.ack(2)  # "b" is safe

    assert outbox.lost() == 4

    assert counts(outbox) == (4, 4, 0)
    assert send_all(outbox) == [(1, b"a"), (2, b"c"), (3, b"d"), (4, b"e")]


def test_lost_restarts_tags_at_one_and_acks_then_name_the_re_sent_messages() -> None:
    log: list[str] = []
    outbox = outbox_of("a", "b", log=log)
    send_all(outbox)
    outbox.lost()
    outbox.add(message("c", recorder(log, "c")))

    assert send_all(outbox) == [(1, b"a"), (2, b"b"), (3, b"c")]
    run(outbox.ack(3, multiple=True))
    assert counts(outbox) == (0, 0, 0)
    assert log == ["c"]  # "a" and "b" lost their callbacks with the channel


def test_lost_drops_the_callbacks_of_every_message_it_puts_back() -> None:
    log: list[str] = []
    outbox = outbox_of("a", "b", "c", log=log)
    outbox.sent()  # "a" sent; "b", "c" wait

    outbox.lost()

    assert send_all(outbox) == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert outbox.ack(3, multiple=True) == []
    assert log == []
    assert counts(outbox) == (0, 0, 0)


def test_lost_with_nothing_in_flight_keeps_the_line_and_with_nothing_at_all_is_harmless() -> None:
    outbox = Outbox()
    assert outbox.lost() == 0
    assert counts(outbox) == (0, 0, 0)

    outbox.add(message("a"))
    outbox.add(message("b"))
    assert outbox.lost() == 2
    assert send_all(outbox) == [(1, b"a"), (2, b"b")]


def test_lost_after_a_nack_sends_the_messages_in_flight_first_then_the_refused_one() -> None:
    # "a" is refused while "b" is in flight; the channel goes before "a" is re-sent.
    outbox = outbox_of("a", "b", "c")
    outbox.sent()  # a: 1
    outbox.sent()  # b: 2
    outbox.nack(1)

    assert outbox.lost() == 3

    assert send_all(outbox) == [(1, b"b"), (2, b"a"), (3, b"c")]


# -- callbacks that publish ----------------------------------------------------------------


def test_a_callback_that_publishes_queues_its_message_behind_the_others() -> None:
    outbox = Outbox()
    log: list[str] = []

    def publish_reply() -> None:
        log.append("a")
        outbox.add(message("reply", recorder(log, "reply")))

    outbox.add(message("a", publish_reply))
    outbox.add(message("b", recorder(log, "b")))
    outbox.add(message("c", recorder(log, "c")))
    outbox.sent()  # a: 1
    outbox.sent()  # b: 2; "c" never sent

    callbacks = outbox.ack(1)
    assert counts(outbox) == (2, 1, 1)
    run(callbacks)  # publishes from inside the confirm callback

    assert log == ["a"]
    assert counts(outbox) == (3, 2, 1)
    assert send_all(outbox) == [(3, b"c"), (4, b"reply")]
    run(outbox.ack(4, multiple=True))
    assert log == ["a", "b", "c", "reply"]
    assert counts(outbox) == (0, 0, 0)
    assert outbox.ack(4, multiple=True) == []


def test_callbacks_of_a_multiple_ack_that_each_publish_queue_their_messages_in_callback_order() -> None:
    outbox = Outbox()
    log: list[str] = []

    def publishing(name: str) -> Callable[[], None]:
        def confirmed() -> None:
            log.append(name)
            outbox.add(message(f"{name}-reply", recorder(log, f"{name}-reply")))

        return confirmed

    for name in ("a", "b", "c"):
        outbox.add(message(name, publishing(name)))
    send_all(outbox)

    run(outbox.ack(2, multiple=True))

    assert counts(outbox) == (3, 2, 1)
    assert send_all(outbox) == [(4, b"a-reply"), (5, b"b-reply")]
    run(outbox.ack(5, multiple=True))
    assert log == ["a", "b", "c", "a-reply", "b-reply"]
    assert send_all(outbox) == [(6, b"c-reply")]
    run(outbox.ack(6))
    assert log == ["a", "b", "c", "a-reply", "b-reply", "c-reply"]
    assert counts(outbox) == (0, 0, 0)


# -- returned (mandatory, unroutable) -------------------------------------------------------


def event(name: str, routing_key: str, on_confirm: Callable[[], None] | None = None) -> Outgoing:
    return Outgoing(name.encode(), "bus_tasks.events", routing_key, {}, None, None, None, True, on_confirm)


def test_a_returned_message_is_settled_by_its_ack_as_returned_and_its_callback_dropped() -> None:
    log: list[str] = []
    outbox = Outbox()
    outbox.add(event("a", "task.vdsm.created", recorder(log, "a")))
    outbox.add(event("b", "task.vdsm.updated", recorder(log, "b")))
    send_all(outbox)

    assert outbox.returned("bus_tasks.events", "task.vdsm.created", b"a", "312 NO_ROUTE") is True
    assert outbox.take_returned() == []  # not settled before its confirm
    run(outbox.ack(2, multiple=True))

    assert log == ["b"]
    assert counts(outbox) == (0, 0, 0)
    assert outbox.take_returned() == [Returned("bus_tasks.events", "task.vdsm.created", "312 NO_ROUTE")]
    assert outbox.take_returned() == []  # handed over once


def test_a_return_marks_the_earliest_unconfirmed_message_with_that_key_and_body() -> None:
    outbox = Outbox()
    for name, key in (("same", "task.vdsm.created"), ("same", "task.vdsm.created"), ("other", "task.x.y")):
        outbox.add(event(name, key))
    send_all(outbox)

    outbox.returned("bus_tasks.events", "task.vdsm.created", b"same", "312 NO_ROUTE")
    run(outbox.ack(1))
    run(outbox.ack(2))
    run(outbox.ack(3))

    assert outbox.take_returned() == [Returned("bus_tasks.events", "task.vdsm.created", "312 NO_ROUTE")]


def test_a_return_that_matches_no_message_in_flight_is_recorded_at_once() -> None:
    outbox = Outbox()  # e.g. published without confirms: nothing is tracked

    assert outbox.returned("bus_tasks.events", "task.vdsm.created", b"x", "312 NO_ROUTE") is False
    assert outbox.take_returned() == [Returned("bus_tasks.events", "task.vdsm.created", "312 NO_ROUTE")]


def test_a_returned_message_lost_with_its_channel_or_nacked_is_sent_again_and_routed_afresh() -> None:
    log: list[str] = []
    outbox = Outbox()
    outbox.add(event("a", "task.vdsm.created", recorder(log, "a")))
    outbox.add(event("b", "task.vdsm.created"))
    send_all(outbox)
    outbox.returned("bus_tasks.events", "task.vdsm.created", b"a", "312 NO_ROUTE")
    outbox.returned("bus_tasks.events", "task.vdsm.created", b"b", "312 NO_ROUTE")

    outbox.nack(2)
    outbox.lost()
    assert send_all(outbox) == [(1, b"a"), (2, b"b")]
    run(outbox.ack(2, multiple=True))  # this time both were routed

    assert outbox.take_returned() == []
    assert counts(outbox) == (0, 0, 0)


# -- any interleaving ----------------------------------------------------------------------

Op = tuple[str, int, bool]

# (operation, tag, flag): the tag is for ack and nack (tags beyond the sent ones are unknown),
# the flag is ``multiple`` for ack and nack and "its callback publishes" for add.
operations = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "send", "send", "ack", "nack", "lost"]),
        st.integers(0, 8),
        st.booleans(),
    ),
    max_size=60,
)


class Run:
    """Drives an :class:`Outbox` the way the connection does, and checks it against the rules.

    The rules of the line: a new message goes to the back; refused messages (in tag order) go to
    the front; a lost channel puts everything in flight (in tag order) in front of the line.
    """

    def __init__(self) -> None:
        self.outbox = Outbox()
        self.added: list[int] = []  # message ids, in add order
        self.first_sent: list[int] = []  # ids, in the order each went out for the first time
        self.in_flight: dict[int, int] = {}  # tag -> id, sent on the current channel
        self.line: list[int] = []  # ids waiting to be sent, in the order the rules give
        self.confirmed: list[int] = []  # ids, in the order the broker confirmed them
        self.calls: list[int] = []  # ids whose callback ran
        self.dropped: set[int] = set()  # ids that waited at a lost(): their callbacks are gone
        self.sends_on_channel = 0

    def pending(self) -> set[int]:
        return set(self.added) - set(self.confirmed)

    def add(self, publishes: bool) -> None:
        ident = len(self.added)
        self.added.append(ident)
        self.line.append(ident)

        def confirmed() -> None:
            self.calls.append(ident)
            if publishes:
                self.add(publishes=False)  # a publish from inside a confirm callback

        self.outbox.add(Outgoing(str(ident).encode(), "", "q", {}, None, None, None, True, confirmed))

    def send(self) -> None:
        head = self.outbox.head()
        if head is None:
            with pytest.raises(LookupError):
                self.outbox.sent()
            return
        ident = int(head.body)
        assert ident == self.line.pop(0)
        assert ident in self.pending()
        assert ident not in self.in_flight.values()
        tag = self.outbox.sent()
        self.sends_on_channel += 1
        assert tag == self.sends_on_channel  # 1, 2, 3... on every channel
        self.in_flight[tag] = ident
        if ident not in self.first_sent:
            self.first_sent.append(ident)

    def settled_by(self, tag: int, multiple: bool) -> list[int]:
        if multiple:
            return [t for t in self.in_flight if t <= tag]
        return [tag] if tag in self.in_flight else []

    def ack(self, tag: int, multiple: bool) -> None:
        tags = self.settled_by(tag, multiple)
        callbacks = self.outbox.ack(tag, multiple=multiple)
        idents = [self.in_flight.pop(t) for t in tags]
        self.confirmed.extend(idents)
        expected_calls = [i for i in idents if i not in self.dropped]
        assert len(callbacks) == len(expected_calls)
        calls_before = len(self.calls)
        for callback in callbacks:
            callback()
        assert self.calls[calls_before:] == expected_calls  # in tag order

    def nack(self, tag: int, multiple: bool) -> None:
        tags = self.settled_by(tag, multiple)
        refused = [self.in_flight.pop(t) for t in tags]
        assert len(self.outbox.nack(tag, multiple=multiple)) == len(refused)
        self.line[:0] = refused

    def lost(self) -> None:
        assert self.outbox.lost() == len(self.pending())
        self.dropped |= self.pending()
        self.line[:0] = self.in_flight.values()
        self.in_flight.clear()
        self.sends_on_channel = 0

    def check(self) -> None:
        assert len(self.confirmed) == len(set(self.confirmed))  # never confirmed twice
        assert len(self.calls) == len(set(self.calls))  # no callback ran twice
        assert not self.dropped & set(self.calls)  # none ran after its channel was lost
        assert set(self.calls) <= set(self.confirmed)  # only confirmed messages call back
        assert len(self.outbox) == len(self.pending())
        assert self.outbox.unconfirmed == len(self.in_flight)
        assert self.outbox.unsent == len(self.line) == len(self.pending()) - len(self.in_flight)
        head = self.outbox.head()
        assert (int(head.body) if head is not None else None) == (self.line[0] if self.line else None)
        # Refused and lost messages go back ahead of the rest: never-sent ones keep add order.
        assert self.first_sent == self.added[: len(self.first_sent)]


@settings(max_examples=300, deadline=None)
@given(ops=operations)
def test_any_interleaving_confirms_every_message_exactly_once_and_runs_each_callback_at_most_once(
    ops: list[Op],
) -> None:
    state = Run()
    for op, tag, flag in ops:
        if op == "add":
            state.add(publishes=flag)
        elif op == "send":
            state.send()
        elif op == "ack":
            state.ack(tag, multiple=flag)
        elif op == "nack":
            state.nack(tag, multiple=flag)
        else:
            state.lost()
        state.check()

    # Finally send and ack everything (callbacks may publish more: go on until none waits).
    for _ in range(3):
        while state.outbox.head() is not None:
            state.send()
        if state.in_flight:
            state.ack(max(state.in_flight), multiple=True)
        state.check()

    assert len(state.outbox) == 0
    assert state.outbox.head() is None
    assert sorted(state.confirmed) == state.added  # every message, exactly once
    # Every callback not dropped by a lost channel ran, exactly once.
    assert sorted(state.calls) == [i for i in state.added if i not in state.dropped]


# -- nacks in a row: a new connection (issue 25) ----------------------------------------------


def a_sender() -> Sender:
    link: Any = SimpleNamespace(url="amqp://u:secret@h/v", ever_connected=True, take_closed_with=lambda: None)
    return Sender(link, Inbox(), cast(Any, None), confirming=True, max_unconfirmed=10, window=10)


def refuse(sender: Sender, times: int) -> None:
    """Send the waiting message and have the broker nack it, ``times`` times."""
    for _ in range(times):
        sender._on_nack(sender.outbox.sent(), False)


def test_nacks_in_a_row_replace_the_connection_and_log_at_their_doublings_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A channel that reached a quorum queue while it elected a leader is refused for ~30 s
    # (RabbitMQ 3.10) while a new connection is served: after a few nacks in a row, the sender
    # marks its connection lost (the next drain, publish or flush recovers it) and keeps the message.
    sender = a_sender()
    sender.outbox.add(message("command"))
    caplog.set_level(logging.WARNING, logger="bus_tasks.transport")
    refuse(sender, NACKS_BEFORE_NEW_CONNECTION - 1)
    assert not sender.broken
    refuse(sender, 1)
    assert sender.broken
    assert sender.pending == 1  # kept, to be sent on the new connection
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if "nacks in a row); re-sending" in line] == [
        f"broker refused 1 messages ({n} nacks in a row); re-sending them" for n in (1, 2, 4)
    ]
    assert f"{NACKS_BEFORE_NEW_CONNECTION} nacks in a row: re-sending on a new connection" in lines
    assert "secret" not in caplog.text


def test_an_ack_ends_a_run_of_nacks() -> None:
    sender = a_sender()
    sender.outbox.add(message("first"))
    refuse(sender, NACKS_BEFORE_NEW_CONNECTION - 1)
    sender._on_ack(sender.outbox.sent(), False)
    sender.outbox.add(message("second"))
    refuse(sender, NACKS_BEFORE_NEW_CONNECTION - 1)
    assert not sender.broken


def test_acks_of_other_messages_do_not_end_a_messages_run_of_nacks() -> None:
    # A command to a quorum queue electing its leader is refused while the heartbeats beside it,
    # to a stream, are confirmed: the command's run goes on, and the connection is replaced.
    sender = a_sender()
    sender.outbox.add(message("command"))
    for _ in range(NACKS_BEFORE_NEW_CONNECTION):
        assert not sender.broken
        refused_tag = sender.outbox.sent()  # the command, back at the head after each nack
        sender.outbox.add(message("beat"))
        beat_tag = sender.outbox.sent()
        sender._on_ack(beat_tag, False)
        sender._on_nack(refused_tag, False)
    assert sender.broken
    assert sender.pending == 1  # the command, kept for the new connection


def test_a_new_connection_starts_a_new_run_of_nacks() -> None:
    sender = a_sender()
    sender.outbox.add(message("command"))
    refuse(sender, NACKS_BEFORE_NEW_CONNECTION)
    assert sender.broken
    sender.broken = False  # recovered: the outbox was told the channel is lost, see Sender.lost
    refuse(sender, NACKS_BEFORE_NEW_CONNECTION - 1)
    assert not sender.broken


# -- a message overtaken by later confirms: a new connection (issue 25) -------------------------


def test_a_message_is_overtaken_once_a_later_one_is_confirmed_and_not_after_its_own_confirm() -> None:
    outbox = Outbox()
    for name in ("first", "second", "third"):
        outbox.add(message(name))
        outbox.sent()
    assert not outbox.overtaken
    outbox.ack(1)
    assert not outbox.overtaken  # in order so far
    outbox.ack(3)
    assert outbox.overtaken  # 2 waits while 3 was confirmed
    outbox.ack(2)
    assert not outbox.overtaken
    outbox.add(message("fourth"))
    outbox.sent()
    outbox.lost()  # a new channel: its tags count from 1 again, nothing overtaken on it yet
    assert not outbox.overtaken
    outbox.sent()
    assert not outbox.overtaken


def test_a_message_overtaken_for_a_while_is_sent_again_on_a_new_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Seen on a three-node cluster: the "aborting" event a subsystem published as the stream's
    # leader was killed never got a confirm, while every later message did (RabbitMQ 3.10).
    clock = [100.0]
    sender = a_sender()
    sender.clock = lambda: clock[0]
    for name in ("lost with the leader", "later"):
        sender.outbox.add(message(name))
        sender.outbox.sent()
    caplog.set_level(logging.WARNING, logger="bus_tasks.transport")
    sender._on_ack(2, False)
    clock[0] += publishing.OVERTAKEN_FOR_S - 0.1
    sender._check_overtaken()
    assert not sender.broken  # confirms may come out of order for a moment
    clock[0] += 0.1
    sender._check_overtaken()
    assert sender.broken
    assert sender.pending == 1  # kept, to be sent on the new connection
    assert "later ones were confirmed" in caplog.text
    assert "secret" not in caplog.text
    sender._on_ack(7, False)  # the lost channel's: ignored, its tags are not the next one's
    assert sender.pending == 1


def test_a_message_confirmed_late_but_in_time_keeps_the_connection() -> None:
    clock = [100.0]
    sender = a_sender()
    sender.clock = lambda: clock[0]
    for name in ("slow", "fast"):
        sender.outbox.add(message(name))
        sender.outbox.sent()
    sender._on_ack(2, False)
    clock[0] += publishing.OVERTAKEN_FOR_S - 1.0
    sender._on_ack(1, False)
    clock[0] += 10.0
    sender._check_overtaken()
    assert (sender.broken, sender.pending) == (False, 0)


def test_a_publish_that_only_saw_the_channel_closed_still_drops_what_the_close_refused() -> None:
    # A publish on a channel the broker closed fails as "connection closed" (py-amqp); why it
    # closed is what the read that found the close kept (the link's closed_with).
    text = "PRECONDITION_FAILED - message size 133667 is larger than configured max size 65536"
    refused = ChannelError(text, reply_code=406)  # as py-amqp raises a channel's close
    closes: list[BaseException | None] = [refused]
    link: Any = SimpleNamespace(
        url="amqp://h/v", ever_connected=True, take_closed_with=lambda: closes.pop() if closes else None
    )
    sender = Sender(link, Inbox(), cast(Any, None), confirming=True, max_unconfirmed=10, window=10)
    sender.outbox.add(message("x" * 133667))
    sender.outbox.sent()
    sender.outbox.add(message("small"))
    sender.lost(RecoverableConnectionError("basic_publish: connection closed"))
    assert sender.pending == 1  # the small one, kept for the new connection; the large one dropped
    assert sender.max_message_bytes == 65536  # and the next one over it is refused before sending
    assert closes == []  # taken once
