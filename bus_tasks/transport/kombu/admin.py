"""Tools' view of the broker: queue depths, consumer counts, one-off gets, deletes, resets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from amqp.exceptions import NotFound
from kombu.entity import Queue
from kombu.transport import memory

from bus_tasks.transport.bus import Delivery
from bus_tasks.transport.kombu.consumers import delivery_of
from bus_tasks.transport.kombu.exclusive import reset_memory_claims


def queue_size(channel: Any, queue: Queue) -> int:
    """Messages ready in ``queue`` (declares it if missing)."""
    _, count, _ = queue.bind(channel).queue_declare(passive=False)
    return int(count)


def consumer_count(channel: Any, queue: Queue) -> int:
    """Consumers attached to ``queue`` (declares it if missing)."""
    _, _, consumers = queue.bind(channel).queue_declare(passive=False)
    return int(consumers)


def queue_exists(channel: Any, name: str) -> bool:
    """Whether queue ``name`` exists (RabbitMQ), asked on ``channel``, a channel of its own: the
    broker closes it when the queue is missing. The channel is closed afterwards."""
    return passive_consumer_count(channel, name) is not None


def passive_consumer_count(channel: Any, name: str) -> int | None:
    """Consumers of queue ``name`` without declaring it (RabbitMQ); None when it does not exist.

    Asked on ``channel``, a channel of its own, closed afterwards.
    """
    try:
        _, _, consumers = channel.queue_declare(queue=name, passive=True)
        return int(consumers)
    except NotFound:  # the broker closed the channel (py-amqp reopened it)
        return None
    finally:
        with contextlib.suppress(Exception):  # a channel already gone is as good as closed
            channel.close()


def get(channel: Any, queue: Queue, stale: Callable[[], bool]) -> Delivery | None:
    """Fetch one message from ``queue`` without a consumer (for tools and tests)."""
    message = queue.bind(channel).get(no_ack=False)
    return None if message is None else delivery_of(message, stale)


def delete_queues(channel: Any, queue_names: list[str]) -> None:
    for name in queue_names:
        channel.queue_delete(name)


def reset_memory_transport() -> None:
    """Forget every queue, exchange and binding of kombu's in-process ``memory://`` broker.

    kombu keeps that broker's state in class attributes; tests call this between runs.
    """
    memory.Channel.queues.clear()
    memory.Channel.events.clear()
    memory.Transport.global_state.clear()
    reset_memory_claims()
