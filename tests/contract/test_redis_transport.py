"""The Redis transport with grouped round trips (transport/redis_tuning.py) keeps kombu's ack
emulation: what a consumer was given is recorded before it is handled, within the prefetch, in
order, exactly once while acked, and comes back when it was not acked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from support.brokers import Broker, admin_of, make_broker

from bus_tasks import names
from bus_tasks.transport import Delivery

BACKLOG = 300


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.integration)])
def redis_like(request: pytest.FixtureRequest) -> Iterator[Broker]:
    yield from make_broker(request.param, request)


def unacked(broker: Broker) -> int:
    """Deliveries recorded as given to a consumer and not yet acked (kombu's ``unacked`` hash)."""
    client = redis.Redis.from_url(broker.url)
    try:
        return int(client.hlen(f"{broker.redis_key_prefix}unacked"))
    finally:
        client.close()


def backlog(broker: Broker, count: int = BACKLOG) -> str:
    """A queue (the dead letters', in this test's own key prefix) holding ``count`` messages,
    bodies b"0", b"1" ... in publish order."""
    publisher = broker.connection(confirm_publish=False)
    queue = names.DEAD_QUEUE
    publisher.topology.declare_queue(queue)
    for i in range(count):
        publisher.publish(str(i).encode(), routing_key=queue, persistent=True)
    return queue


def test_a_backlog_comes_in_order_within_the_prefetch_each_recorded_before_it_is_handled(
    redis_like: Broker,
) -> None:
    queue = backlog(redis_like)
    conn = redis_like.connection(confirm_publish=False)
    given: list[Delivery] = []
    recorded_when_handled: list[int] = []

    def handle(delivery: Delivery) -> None:
        given.append(delivery)
        recorded_when_handled.append(unacked(redis_like))

    conn.consume(queue, handle, prefetch=100)
    done: list[Delivery] = []
    for _ in range(100):
        conn.drain(0.5)
        assert len(given) <= 100, "more given than the prefetch allows"
        assert min(recorded_when_handled, default=100) >= len(given), "handled before it was recorded"
        if len(given) == 100:
            conn.ack_all(given)
            assert unacked(redis_like) == 0
            done += given
            given.clear()
            recorded_when_handled.clear()
        if len(done) == BACKLOG:
            break
    assert [d.body for d in done] == [str(i).encode() for i in range(BACKLOG)]
    assert admin_of(conn).queue_size(queue) == 0
    assert not conn.drain(0.2), "a message came twice"


def test_messages_given_but_not_acked_come_back_when_the_connection_closes(redis_like: Broker) -> None:
    queue = backlog(redis_like, 50)
    conn = redis_like.connection(confirm_publish=False)
    given: list[Delivery] = []
    conn.consume(queue, given.append, prefetch=20)
    conn.drain(0.5)
    assert 0 < len(given) <= 20
    conn.ack_all(given[:5])
    assert unacked(redis_like) == len(given) - 5
    conn.close()
    assert unacked(redis_like) == 0
    again = redis_like.connection(confirm_publish=False)
    assert admin_of(again).queue_size(queue) == 45


def test_a_consumer_without_acks_is_not_recorded_and_takes_each_message_once(redis_like: Broker) -> None:
    queue = backlog(redis_like, 30)
    conn = redis_like.connection(confirm_publish=False)
    given: list[Delivery] = []
    conn.consume(queue, given.append, no_ack=True)
    for _ in range(100):
        if len(given) == 30:
            break
        conn.drain(0.5)
    assert [d.body for d in given] == [str(i).encode() for i in range(30)]
    assert unacked(redis_like) == 0
    assert not conn.drain(0.2)
