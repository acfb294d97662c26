"""A queue that exists but is not ready yet is waited for with back-off; other refusals are not."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from amqp.exceptions import AccessRefused, NotFound, PreconditionFailed, ResourceError
from support.timing import Stopwatch, assert_ended_by

from bus_tasks import transport
from bus_tasks.errors import ShutdownRequested
from bus_tasks.transport import BusOptions
from bus_tasks.transport.kombu.link import Link
from bus_tasks.transport.kombu.readiness import not_ready, when_ready

NO_REPLICA = PreconditionFailed(
    "queue 'bus_tasks.log' in vhost '/' does not have a replica on the local node", (60, 20)
)
HOME_DOWN = NotFound(
    "home node 'rabbit@r1' of durable queue 'bus_tasks.rpc' in vhost '/' is down or inaccessible", (50, 10)
)


def link_of(stop: threading.Event | None = None) -> Link:
    bus = transport.open("memory://", BusOptions(reconnect_max_s=0.4), stop=stop)
    return bus.link  # type: ignore[attr-defined, no-any-return]  # the kombu bus's link


class Refusals:
    """An operation the broker refuses with ``errors``, one per try, then answers ``"done"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.tries = 0

    def __call__(self) -> str:
        self.tries += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_a_stream_without_a_local_replica_and_a_queue_whose_node_is_down_are_not_ready() -> None:
    assert not_ready(NO_REPLICA) == (
        "406 queue 'bus_tasks.log' in vhost '/' does not have a replica on the local node"
    )
    # Consuming a stream whose replica restarts after its leader was killed (RabbitMQ 3.10, the
    # cluster tests): without this sign a failover took 3.2 s of reconnect back-off, not 0.5.
    restarting = ResourceError(
        "queue 'bus_tasks.events.log' in vhost 'v' does not have a running local replica", (60, 20)
    )
    assert not_ready(restarting) is not None
    assert not_ready(HOME_DOWN) is not None


def test_a_missing_queue_a_mismatch_or_a_refusal_is_not_a_queue_not_ready_yet() -> None:
    assert not_ready(NotFound("no queue 'bus_tasks.rpc' in vhost '/'", (50, 10))) is None
    assert not_ready(PreconditionFailed("inequivalent arg 'x-queue-type'", (50, 10))) is None
    assert not_ready(AccessRefused("queue 'q' in exclusive use", (60, 20))) is None
    assert not_ready(TimeoutError("timed out")) is None  # a connection's, not the queue's


def test_an_operation_on_a_queue_not_ready_is_tried_again_with_back_off_until_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bus_tasks.transport")
    operation = Refusals(NO_REPLICA, NO_REPLICA, HOME_DOWN)
    with Stopwatch() as watch:
        assert when_ready(link_of(), "queue bus_tasks.log", operation) == "done"
    assert operation.tries == 4
    assert_ended_by(watch, 2.0, not_before_s=0.1 + 0.2 + 0.4)  # waits 0.1, 0.2, then the 0.4 cap
    lines = [r.getMessage() for r in caplog.records if r.name == "bus_tasks.transport"]
    assert lines[0].startswith("queue bus_tasks.log is not ready yet (406 queue 'bus_tasks.log'")
    assert lines[-1] == "queue bus_tasks.log is ready after 4 attempts"


def test_any_other_refusal_is_raised_at_once() -> None:
    mismatch = PreconditionFailed("inequivalent arg 'x-queue-type'", (50, 10))
    operation = Refusals(mismatch)
    with pytest.raises(PreconditionFailed, match="inequivalent"):
        when_ready(link_of(), "queue bus_tasks.rpc", operation)
    assert operation.tries == 1


def test_waiting_for_a_queue_gives_up_at_the_deadline_with_the_brokers_word() -> None:
    link = link_of()
    operation = Refusals(*[NO_REPLICA] * 100)
    with Stopwatch() as watch, link.bounded(time.monotonic() + 1.0), pytest.raises(PreconditionFailed):
        when_ready(link, "queue bus_tasks.log", operation)
    assert_ended_by(watch, 1.5, not_before_s=1.0)
    assert 3 <= operation.tries < 100


def test_a_stop_ends_the_wait_for_a_queue() -> None:
    stop = threading.Event()
    link = link_of(stop)
    operation = Refusals(*[NO_REPLICA] * 1000)
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        with Stopwatch() as watch, pytest.raises(ShutdownRequested):
            when_ready(link, "queue bus_tasks.log", operation)
    finally:
        timer.cancel()
    assert_ended_by(watch, 1.5, not_before_s=0.5)


def test_a_queue_not_ready_is_tried_again_at_least_every_second_whatever_the_reconnect_back_off() -> None:
    # The node is there and the state passes in seconds: no 5 s waits between tries.
    bus = transport.open("memory://", BusOptions(reconnect_max_s=5.0))
    operation = Refusals(*[NO_REPLICA] * 7)
    with Stopwatch() as watch:
        assert when_ready(bus.link, "queue bus_tasks.log", operation) == "done"  # type: ignore[attr-defined]
    # 0.1, 0.2, 0.4, 0.8, then 1 s apart: 4.5 s (doubling to 5 s apart it would be 11.3 s).
    assert_ended_by(watch, 8.0, not_before_s=4.5)
    assert operation.tries == 8
