"""The serial inbox: handlers run only from ``run()``, one at a time, in arrival order, never nested."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.brokers import admin_of

from bus_tasks import names, transport
from bus_tasks.testing import drain
from bus_tasks.transport import Bus, Delivery, ReentrantDrain, reset_memory_transport
from bus_tasks.transport.kombu.consumers import Inbox


def recording(log: list[object]) -> Callable[[object], None]:
    def handle(item: object) -> None:
        log.append(item)

    return handle


def test_put_never_runs_the_handler() -> None:
    inbox = Inbox()
    log: list[object] = []

    inbox.put(recording(log), "a")
    inbox.put(recording(log), "b")

    assert log == []
    assert len(inbox) == 2
    assert not inbox.running


def test_run_handles_the_items_one_at_a_time_in_arrival_order_and_returns_the_count() -> None:
    inbox = Inbox()
    log: list[object] = []
    other: list[object] = []
    inbox.put(recording(log), "a")
    inbox.put(recording(other), "b")  # each item runs its own handler
    inbox.put(recording(log), "c")

    assert inbox.run() == 3

    assert log == ["a", "c"]
    assert other == ["b"]
    assert len(inbox) == 0


def test_run_with_nothing_waiting_returns_zero() -> None:
    inbox = Inbox()

    assert inbox.run() == 0
    assert not inbox.running


def test_an_item_put_by_a_running_handler_runs_in_the_same_run_after_those_already_waiting() -> None:
    inbox = Inbox()
    log: list[object] = []

    def first(item: object) -> None:
        log.append(item)
        inbox.put(recording(log), "from a")
        assert log == ["a"]  # put from inside a handler does not run it either

    inbox.put(first, "a")
    inbox.put(recording(log), "b")

    assert inbox.run() == 3

    assert log == ["a", "b", "from a"]
    assert len(inbox) == 0


def test_run_from_inside_a_handler_raises_reentrant_drain_and_running_is_true_only_inside() -> None:
    inbox = Inbox()
    seen: list[tuple[object, bool]] = []
    errors: list[ReentrantDrain] = []

    def handle(item: object) -> None:
        seen.append((item, inbox.running))
        with pytest.raises(ReentrantDrain) as caught:
            inbox.run()
        errors.append(caught.value)
        assert inbox.running  # the refused run() left the outer one running

    inbox.put(handle, "a")
    inbox.put(handle, "b")
    assert not inbox.running

    assert inbox.run() == 2

    assert seen == [("a", True), ("b", True)]  # the nested run() ran nothing
    assert len(errors) == 2
    assert isinstance(errors[0], RuntimeError)
    assert not inbox.running


def test_an_error_from_a_handler_propagates_and_the_items_behind_it_wait_for_the_next_run() -> None:
    inbox = Inbox()
    log: list[object] = []

    def fail(item: object) -> None:
        log.append(item)
        raise ValueError(f"cannot handle {item}")

    inbox.put(recording(log), "a")
    inbox.put(fail, "b")
    inbox.put(recording(log), "c")
    inbox.put(recording(log), "d")

    with pytest.raises(ValueError, match="cannot handle b"):
        inbox.run()

    assert not inbox.running
    assert log == ["a", "b"]
    assert len(inbox) == 2  # the failed item is gone; the rest wait
    assert inbox.run() == 2
    assert log == ["a", "b", "c", "d"]


def test_clear_drops_every_waiting_item() -> None:
    inbox = Inbox()
    log: list[object] = []
    inbox.put(recording(log), "a")
    inbox.put(recording(log), "b")

    inbox.clear()

    assert len(inbox) == 0
    assert inbox.run() == 0
    assert log == []
    inbox.put(recording(log), "c")  # the inbox still works afterwards
    assert inbox.run() == 1
    assert log == ["c"]


def test_clear_keeping_confirmed_keeps_only_the_callbacks_of_messages_the_broker_took() -> None:
    inbox = Inbox()
    log: list[object] = []
    inbox.put(recording(log), "delivery 1")
    inbox.confirmed(lambda: log.append("confirm a"))
    inbox.put(recording(log), "delivery 2")
    inbox.confirmed(lambda: log.append("confirm b"))

    inbox.clear(keep_confirmed=True)  # a connection lost: its deliveries come again

    assert inbox.run() == 2
    assert log == ["confirm a", "confirm b"]
    inbox.confirmed(lambda: log.append("confirm c"))
    inbox.clear()  # a connection closed: nothing runs any more
    assert inbox.run() == 0


# -- through the real connection -----------------------------------------------------------


@pytest.fixture
def memory_connection() -> Iterator[Bus]:
    reset_memory_transport()
    conn = transport.open("memory://")
    try:
        yield conn
    finally:
        conn.close()
        reset_memory_transport()


def test_a_handler_that_publishes_and_flushes_never_runs_another_handler_inside_it(
    memory_connection: Bus,
) -> None:
    conn = memory_connection
    conn.topology.declare_topology()
    handled: list[bytes] = []
    depth = 0
    deepest = 0
    inside_first: list[bytes] = []
    nested_drain: list[ReentrantDrain] = []

    def handle(delivery: Delivery) -> None:
        nonlocal depth, deepest
        depth += 1
        deepest = max(deepest, depth)
        try:
            handled.append(delivery.body)
            if delivery.body == b'{"n": 1}':
                conn.publish(b'{"n": 3}', exchange="", routing_key=names.DEAD_QUEUE)
                conn.flush()
                inside_first.extend(handled)  # nothing else was handled meanwhile
                with pytest.raises(ReentrantDrain) as caught:
                    conn.drain(0.01)
                nested_drain.append(caught.value)
            delivery.ack()
        finally:
            depth -= 1

    conn.consume(names.DEAD_QUEUE, handle)
    conn.publish(b'{"n": 1}', exchange="", routing_key=names.DEAD_QUEUE)
    conn.publish(b'{"n": 2}', exchange="", routing_key=names.DEAD_QUEUE)
    assert handled == []  # publishing runs no handler: only drain() does

    rounds = drain(conn, timeout_s=5)

    assert rounds >= 1
    assert handled == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert inside_first == [b'{"n": 1}']
    assert len(nested_drain) == 1
    assert deepest == 1
    assert depth == 0
    assert admin_of(conn).queue_size(names.DEAD_QUEUE) == 0  # every delivery was acked, none redelivered
    assert not conn.drain(0.01)  # quiet now, and drain works again outside a handler


def test_a_confirm_not_yet_run_when_the_connection_is_recovered_still_runs(memory_connection: Bus) -> None:
    # The relay marks a forwarded command delivered from its confirm's callback: lost with a
    # reconnect, the command would not be sent again when its answer is lost (SPEC 17).
    ran: list[str] = []
    memory_connection.publish(
        b"command", routing_key=names.DEAD_QUEUE, on_confirm=lambda: ran.append("confirmed")
    )
    memory_connection.recover()

    assert ran == []  # callbacks run from the loop's drain, not inside recover
    memory_connection.drain(0)
    assert ran == ["confirmed"]
