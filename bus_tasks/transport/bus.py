"""What the rest of bus_tasks knows of the broker: the ``Bus`` protocol, ``Delivery``, ``Handler``.

Queues and exchanges are named by the strings of :mod:`bus_tasks.names`; kombu stays inside
this package. Handlers run one at a time, only from :meth:`Bus.drain`, never from inside a
publish, a confirm wait or a flush.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from bus_tasks import names
from bus_tasks.errors import QueueInUse

__all__ = ["Bus", "Delivery", "Handler", "QueueInUse"]


@dataclass(slots=True)
class Delivery:
    """One received message."""

    body: bytes
    routing_key: str
    headers: dict[str, Any]
    reply_to: str | None
    correlation_id: str | None
    expiration_ms: int | None
    user_id: str | None = None  # who sent it, as the AMQP property says (RabbitMQ validates it)
    _ack: Callable[[bool], None] = field(repr=False, default=lambda multiple: None)

    def ack(self, *, multiple: bool = False) -> None:
        """Settle this delivery (with ``multiple``, every earlier one of its consumer too).

        A delivery of a connection that has since been replaced comes again on the new one:
        acking it then does nothing.
        """
        self._ack(multiple)

    @property
    def offset(self) -> int | None:
        """Its position in the stream it was read from (RabbitMQ's ``x-stream-offset``), if any."""
        value = self.headers.get(names.HEADER_STREAM_OFFSET)
        return value if type(value) is int else None

    def deadline(self) -> float | None:
        """Epoch seconds after which the sender no longer waits, if it said."""
        sent_at = self.headers.get(names.HEADER_SENT_AT)
        if self.expiration_ms is None or not isinstance(sent_at, int | float):
            return None
        return float(sent_at) + self.expiration_ms / 1000.0


Handler = Callable[[Delivery], None]


class Bus(Protocol):
    """One broker connection as bus_tasks uses it (see :class:`~bus_tasks.transport.BusConnection`)."""

    url: str
    is_amqp: bool

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection or channel was lost: call :meth:`recover`."""
        ...

    @property
    def pending(self) -> int:
        """Messages published and not yet confirmed by the broker."""
        ...

    def connect(self) -> None: ...

    def fileno(self) -> int | None:
        """The broker socket's descriptor to select on (AMQP, connected); None otherwise."""
        ...

    def bounded(self, deadline: float) -> AbstractContextManager[None]:
        """Within the block, waiting for the broker gives up at ``deadline`` (monotonic)."""
        ...

    def declare_topology(self) -> None:
        """The aggregator's exchanges and queues (events, RPC, dead letters)."""
        ...

    def declare_exchanges(self) -> None: ...

    def declare_queue(self, queue: str) -> None:
        """A well-known queue of :mod:`bus_tasks.names` (with its bindings)."""
        ...

    def declare_control_queue(self, subsystem: str) -> str: ...

    def declare_reply_queue(self, prefix: str) -> str:
        """A new private, self-deleting queue for replies; returns its name."""
        ...

    def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        no_ack: bool = False,
        prefetch: int | None = None,
        exclusive: bool = False,
        offset: Callable[[], int | str] | None = None,
    ) -> None:
        """Deliver messages of ``queue`` to ``handler`` during :meth:`drain`.

        ``exclusive``: be its only consumer, or raise :class:`QueueInUse`. ``offset``: a
        stream's start (an offset or ``"first"``), asked at every (re)subscription.
        """
        ...

    @property
    def uses_stream(self) -> bool:
        """Events are read from the stream (RabbitMQ with ``event_log = "stream"``)."""
        ...

    @property
    def events_source(self) -> str:
        """The queue an aggregator reads events from: the stream, or its own events queue."""
        ...

    def declare_events(self) -> None:
        """Where events wait for aggregators: the stream, or the events queue of this name."""
        ...

    def declare_replica_queue(self, prefix: str) -> str:
        """A new queue of this connection's own, deleted when its consumer goes; its name."""
        ...

    def declare_presence_queue(self) -> str:
        """A new private queue of every heartbeat (subsystems' and aggregators'); its name."""
        ...

    def declare_watch_queue(self) -> str:
        """A new private queue of every aggregator's change feed (docs/watching.md); its name."""
        ...

    def publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str,
        headers: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        expiration_s: float | None = None,
        persistent: bool = True,
        on_confirm: Callable[[], None] | None = None,
    ) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for the broker's confirms of everything published so far.

        Raises:
            PublishUnreachable: when messages wait because the broker is unreachable.
            PublishError: when some are unconfirmed at ``timeout_s``, or the broker returned
                some it could not route.
        """
        ...

    def drain(self, timeout_s: float) -> bool:
        """Handle what arrives within ``timeout_s``, one delivery at a time; False if nothing did."""
        ...

    def recover(self) -> None: ...

    def ack_all(self, deliveries: list[Delivery]) -> None: ...

    def dead_letter(self, delivery: Delivery, reason: str) -> None: ...

    def queue_exists(self, queue: str) -> bool | None:
        """Whether ``queue`` exists, where the broker can tell (RabbitMQ); None elsewhere (Redis
        and memory:// keep no record of an empty queue). Creates nothing."""
        ...

    def consumer_count(self, queue: str, *, passive: bool = False) -> int | None:
        """Consumers of ``queue`` where the broker counts them (RabbitMQ); None elsewhere.

        Declares the queue if it is missing, unless ``passive``: then a missing queue counts 0.
        """
        ...

    def queue_size(self, queue: str) -> int: ...

    def get(self, queue: str) -> Delivery | None: ...

    def close(self, flush_timeout_s: float = 10.0) -> None: ...
