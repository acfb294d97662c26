"""Deliveries made straight from py-amqp's messages (no kombu ``Message`` per delivery) carry what
kombu's did and ack as kombu acks; a drain reads what has arrived with the socket made
non-blocking once, and gives it back as it was."""

from __future__ import annotations

from typing import Any

import amqp
import pytest
from kombu.connection import Connection
from kombu.exceptions import MessageStateError
from kombu.messaging import Producer
from kombu.transport.pyamqp import Message as KombuMessage
from support.brokers import Broker
from support.deliveries import delivery_fields

from bus_tasks import names
from bus_tasks.testing import wait_until
from bus_tasks.transport import Delivery
from bus_tasks.transport.kombu.consumers import DirectReceiver, delivery_of, direct_delivery


class AckingChannel:
    """What a delivery's ack talks to: records basic_ack calls."""

    no_ack_consumers: set[str] = set()  # kombu's Message reads it

    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.acks.append((delivery_tag, multiple))


def amqp_message(body: bytes | str, channel: AckingChannel, tag: int = 7, **properties: Any) -> Any:
    message = amqp.Message(body, **properties)
    message.channel = channel
    message.delivery_info = {
        "consumer_tag": "ctag",
        "delivery_tag": tag,
        "redelivered": False,
        "exchange": names.EVENTS_EXCHANGE,
        "routing_key": "task.bench.created",
    }
    return message


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {"user_id": "bench", "application_headers": {names.HEADER_STREAM_OFFSET: 41}},
        {"reply_to": "bus_tasks.reply.x", "correlation_id": "c-1", "expiration": "5000"},
        {"expiration": "", "application_headers": {names.HEADER_STREAM_OFFSET: "not an offset", "a": 1}},
    ],
)
@pytest.mark.parametrize("body", [b'{"schema":1}', '{"schema":1,"é":"ü"}'])
def test_a_direct_delivery_carries_what_a_delivery_of_kombus_message_carries(
    properties: dict[str, Any], body: bytes | str
) -> None:
    channel = AckingChannel()
    message = KombuMessage(amqp_message(body, channel, **properties), channel=channel)  # type: ignore[no-untyped-call]
    kombus = delivery_of(message, lambda: False)

    direct = direct_delivery(amqp_message(body, channel, **properties), lambda: False, no_ack=False)

    assert delivery_fields(direct) == delivery_fields(kombus)
    assert isinstance(direct.body, bytes)


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {"application_headers": {}},
        {"user_id": "bench", "application_headers": {names.HEADER_STREAM_OFFSET: 41}},
        {"reply_to": "bus_tasks.reply.x", "expiration": "5000", "application_headers": {"a": [1]}},
    ],
)
def test_the_receiver_hands_each_message_over_as_its_direct_delivery(properties: dict[str, Any]) -> None:
    channel = AckingChannel()
    delivered: list[Delivery] = []
    to_kombu: list[Any] = []
    receive = DirectReceiver(delivered.append, lambda: False, no_ack=False, kombus_own=to_kombu.append)

    receive(amqp_message(b'{"schema":1}', channel, tag=3, **properties))

    expected = direct_delivery(
        amqp_message(b'{"schema":1}', channel, **properties), lambda: False, no_ack=False
    )
    assert [delivery_fields(d) for d in delivered] == [delivery_fields(expected)]
    assert to_kombu == []
    delivered[0].ack(multiple=True)
    assert channel.acks == [(3, True)]


def test_the_receiver_leaves_a_message_with_kombus_compression_header_to_kombu() -> None:
    channel = AckingChannel()
    delivered: list[Delivery] = []
    to_kombu: list[Any] = []
    receive = DirectReceiver(delivered.append, lambda: False, no_ack=False, kombus_own=to_kombu.append)
    message = amqp_message(b"x\x9c", channel, application_headers={"compression": "application/x-gzip"})

    receive(message)

    assert to_kombu == [message]
    assert delivered == []


def test_a_direct_delivery_acks_its_tag_once_and_a_second_ack_raises_as_kombus_does() -> None:
    channel = AckingChannel()
    delivery = direct_delivery(amqp_message(b"{}", channel, tag=12), lambda: False, no_ack=False)

    delivery.ack(multiple=True)

    assert channel.acks == [(12, True)]
    with pytest.raises(MessageStateError):
        delivery.ack()
    assert channel.acks == [(12, True)]


def test_a_direct_delivery_of_a_no_ack_consumer_or_of_a_replaced_connection_acks_nothing() -> None:
    channel = AckingChannel()
    unacked = direct_delivery(amqp_message(b"{}", channel), lambda: False, no_ack=True)
    stale = direct_delivery(amqp_message(b"{}", channel), lambda: True, no_ack=False)

    unacked.ack()
    stale.ack()
    stale.ack()

    assert channel.acks == []


def test_a_drain_reads_a_backlog_in_order_and_leaves_the_socket_blocking_as_it_was(
    rabbitmq_broker: Broker,
) -> None:
    conn = rabbitmq_broker.connection()
    conn.topology.declare_topology()
    got: list[bytes] = []

    def handle(delivery: Delivery) -> None:
        got.append(delivery.body)
        delivery.ack()

    conn.consume(names.DEAD_QUEUE, handle, prefetch=64)
    for n in range(300):
        conn.publish(b'{"n":%d}' % n, exchange="", routing_key=names.DEAD_QUEUE)
    conn.flush()
    sock = conn._link.conn._connection.sock  # type: ignore[attr-defined]
    timeout_before = sock.gettimeout()

    wait_until(lambda: conn.drain(0.1) and len(got) >= 300, timeout_s=30, interval_s=0)

    assert got == [b'{"n":%d}' % n for n in range(300)]
    assert sock.gettimeout() == timeout_before


def test_a_message_kombu_would_decompress_still_goes_through_kombu(rabbitmq_broker: Broker) -> None:
    conn = rabbitmq_broker.connection()
    conn.topology.declare_topology()
    got: list[bytes] = []

    def handle(delivery: Delivery) -> None:
        got.append(delivery.body)
        delivery.ack()

    conn.consume(names.DEAD_QUEUE, handle)
    with Connection(rabbitmq_broker.url) as raw:  # type: ignore[no-untyped-call]
        producer = Producer(raw.channel())  # type: ignore[no-untyped-call]
        producer.publish(  # type: ignore[no-untyped-call]
            b'{"compressed":true}',
            exchange="",
            routing_key=names.DEAD_QUEUE,
            compression="zlib",
            content_type="application/json",
            content_encoding="binary",
        )
    wait_until(lambda: conn.drain(0.1) and got, timeout_s=10, interval_s=0)

    assert got == [b'{"compressed":true}']
