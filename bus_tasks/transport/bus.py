"""What the rest of bus_tasks knows of a broker: the small ``Bus`` protocol, ``Delivery``, ``Handler``.

Broker-neutral, no broker library: queues and exchanges are named by the strings of
:mod:`bus_tasks.names` and described by the specs of :mod:`.topology`. Handlers run one at a
time, only from :meth:`Bus.drain`, never from inside a publish, a confirm wait or a flush.
Capabilities only some brokers have are optional protocols beside it (:class:`Wakeable`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bus_tasks import names
from bus_tasks.errors import QueueInUse
from bus_tasks.transport.topology import Spec, Topology

__all__ = [
    "Bus",
    "Delivery",
    "Handler",
    "Position",
    "QueueInUse",
    "ReentrantDrain",
    "Wakeable",
    "wakeup_handle",
]

Position = int | str  # where a replay starts: a position a Delivery had, or "first"


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
    position: int | None = None  # its place in the log it was replayed from, if any

    def ack(self, *, multiple: bool = False) -> None:
        """Settle this delivery (with ``multiple``, every earlier one of its consumer too).

        A delivery of a connection that has since been replaced comes again on the new one:
        acking it then does nothing.
        """
        self._ack(multiple)

    def deadline(self) -> float | None:
        """Epoch seconds after which the sender no longer waits, if it said."""
        sent_at = self.headers.get(names.HEADER_SENT_AT)
        if self.expiration_ms is None or not isinstance(sent_at, int | float):
            return None
        return float(sent_at) + self.expiration_ms / 1000.0


Handler = Callable[[Delivery], None]


class ReentrantDrain(RuntimeError):
    """Raised when a handler drains the connection that is running it."""


class Bus(Protocol):
    """One broker connection as bus_tasks uses it; :func:`bus_tasks.transport.open` makes one.

    Every operation connects first if needed and reconnects with back-off after a loss (within
    :meth:`bounded`, until its deadline); what was declared and consumed is restored by
    :meth:`recover`.
    """

    url: str
    topology: Topology  # the bus_tasks exchanges and queues, declared on this bus

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection or channel was lost: call :meth:`recover`."""
        ...

    @property
    def pending(self) -> int:
        """Messages published and not yet confirmed by the broker."""
        ...

    @property
    def replays(self) -> bool:
        """True when this bus keeps logs that readers replay from a position of their own."""
        ...

    def connect(self) -> None: ...

    def bounded(self, deadline: float) -> AbstractContextManager[None]:
        """Within the block, waiting for the broker gives up at ``deadline`` (monotonic)."""
        ...

    def declare(self, *specs: Spec) -> None:
        """Declare exchanges and queues (see :meth:`.topology.Declarer.declare`)."""
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

    def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        no_ack: bool = False,
        prefetch: int | None = None,
        exclusive: bool = False,
        replay_from: Callable[[], Position] | None = None,
    ) -> None:
        """Deliver messages of ``queue`` to ``handler`` during :meth:`drain`.

        ``exclusive``: be its only consumer, or raise :class:`QueueInUse`. ``replay_from``: for
        a log, where reading starts (a :attr:`Delivery.position` or ``"first"``), asked at
        every (re)subscription.
        """
        ...

    def drain(self, timeout_s: float) -> bool:
        """Handle what arrives within ``timeout_s``, one delivery at a time; False if nothing did."""
        ...

    def ack_all(self, deliveries: list[Delivery]) -> None:
        """Settle deliveries of one consumer, in order (as few round trips as the broker allows)."""
        ...

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Settle a poison message: moved to the dead letters with ``reason``, then acked."""
        ...

    def recover(self) -> None: ...

    def close(self, flush_timeout_s: float = 10.0) -> None: ...

    def __enter__(self) -> Bus: ...

    def __exit__(self, *exc: object) -> None:
        """Close."""
        ...


@runtime_checkable
class Wakeable(Protocol):
    """A bus whose deliveries can wake a select loop: a readable handle means :meth:`Bus.drain`
    has something to read (RabbitMQ's socket). Others are polled."""

    def wakeup_handle(self) -> int | None:
        """A file descriptor to select on while connected; None when there is none now."""
        ...


def wakeup_handle(bus: Bus) -> int | None:
    """The descriptor to wait on for ``bus`` (see :class:`Wakeable`); None: poll it."""
    return bus.wakeup_handle() if isinstance(bus, Wakeable) else None
