"""The :class:`~bus_tasks.transport.admin.BrokerAdmin` on kombu: queue depths, consumer counts,
one-off gets, deletes; and the reset of kombu's ``memory://`` broker between tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from amqp.exceptions import NotFound
from kombu.entity import Queue
from kombu.transport import memory

from bus_tasks.transport.bus import Delivery
from bus_tasks.transport.kombu.consumers import delivery_of
from bus_tasks.transport.kombu.exclusive import reset_memory_claims
from bus_tasks.transport.kombu.link import Link


class Owner(Protocol):
    """What the admin needs of its connection."""

    @property
    def link(self) -> Link: ...

    @property
    def predeclared(self) -> bool:
        """The shared topology exists beforehand: nothing is declared, not even by a count."""
        ...

    def connect(self) -> None: ...

    def entity(self, queue: str) -> Queue:
        """The kombu queue of this name (declared here, or of :mod:`bus_tasks.names`)."""
        ...

    def staleness(self) -> Callable[[], bool]: ...


class KombuAdmin:
    """The :class:`~bus_tasks.transport.admin.BrokerAdmin` on the connection of one bus."""

    def __init__(self, owner: Owner) -> None:
        self._owner = owner

    def queue_exists(self, queue: str) -> bool | None:
        """Whether ``queue`` exists on RabbitMQ (a passive declare, on a channel of its own);
        None elsewhere: Redis and memory:// keep no record of an empty queue's existence."""
        link = self._owner.link
        if not link.is_amqp:
            return None
        self._owner.connect()
        return queue_exists(link.new_channel(), queue)

    def consumer_count(self, queue: str, *, passive: bool = False) -> int | None:
        """Consumers attached to ``queue`` on RabbitMQ; None elsewhere (no transport counts).

        Declares the queue if missing, unless ``passive``: then a missing queue counts 0 and
        stays missing.
        """
        link = self._owner.link
        if not link.is_amqp:
            return None  # the virtual transports do not count consumers
        self._owner.connect()
        if passive or self._owner.predeclared:
            return passive_consumer_count(link.new_channel(), queue) or 0
        return consumer_count(link.channel, self._owner.entity(queue))

    def queue_size(self, queue: str) -> int:
        """Messages ready in ``queue`` (declares it if missing)."""
        self._owner.connect()
        return queue_size(self._owner.link.channel, self._owner.entity(queue))

    def get(self, queue: str) -> Delivery | None:
        """Fetch one message from ``queue`` without consuming (for tools and tests)."""
        self._owner.connect()
        return get(self._owner.link.channel, self._owner.entity(queue), self._owner.staleness())

    def delete_queues(self, queue_names: list[str]) -> None:
        """Delete queues by name (tools and test teardown)."""
        self._owner.connect()
        delete_queues(self._owner.link.channel, queue_names)


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
