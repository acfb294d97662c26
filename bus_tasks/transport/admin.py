"""``BrokerAdmin``: what tools, tests and the "is anybody there" checks ask of a broker.

Outside the :class:`~bus_tasks.transport.bus.Bus` protocol: a transport offers it when its
broker can answer (:func:`bus_tasks.transport.admin` finds it). Queues are named by the
strings of :mod:`bus_tasks.names`.
"""

from __future__ import annotations

from typing import Protocol

from bus_tasks.transport.bus import Delivery


class BrokerAdmin(Protocol):
    """Queue depths, consumer counts, one-off gets and deletes on the connection of one bus."""

    def queue_exists(self, queue: str) -> bool | None:
        """Whether ``queue`` exists, where the broker can tell (RabbitMQ); None elsewhere (Redis
        and memory:// keep no record of an empty queue). Creates nothing."""
        ...

    def consumer_count(self, queue: str, *, passive: bool = False) -> int | None:
        """Consumers of ``queue`` where the broker counts them (RabbitMQ); None elsewhere.

        Declares the queue if it is missing, unless ``passive``: then a missing queue counts 0.
        """
        ...

    def queue_size(self, queue: str) -> int:
        """Messages ready in ``queue`` (declares it if missing)."""
        ...

    def get(self, queue: str) -> Delivery | None:
        """Fetch one message from ``queue`` without consuming; ack it on the same bus."""
        ...

    def delete_queues(self, queue_names: list[str]) -> None:
        """Delete queues by name (tools and test teardown)."""
        ...


class Administered(Protocol):
    """A bus that offers a :class:`BrokerAdmin` on its own connection."""

    def admin(self) -> BrokerAdmin: ...
