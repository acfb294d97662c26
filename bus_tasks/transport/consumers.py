"""Consumers and the serial inbox: kombu's callbacks only queue; the owning loop handles."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import AccessRefused
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer

from bus_tasks.errors import QueueInUse
from bus_tasks.transport.bus import Delivery, Handler


def delivery_of(message: Message, stale: Callable[[], bool]) -> Delivery:
    """A :class:`Delivery` of a kombu message; acking it does nothing once ``stale()`` is true."""
    props = message.properties
    expiration = props.get("expiration")
    body = message.body
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")

    def ack(multiple: bool) -> None:
        if not stale():
            message.ack(multiple=multiple)

    return Delivery(
        body=body,
        routing_key=message.delivery_info.get("routing_key", ""),
        headers=dict(message.headers or {}),
        reply_to=props.get("reply_to"),
        correlation_id=props.get("correlation_id"),
        expiration_ms=int(expiration) if expiration not in (None, "") else None,
        user_id=props.get("user_id"),
        _ack=ack,
    )


@contextlib.contextmanager
def acks_batched(channels: Iterable[Any]) -> Iterator[None]:
    """Within the block, acks on these channels go to the broker together where the transport
    can group them (Redis: one pipeline per channel, see :mod:`.redis_tuning`); elsewhere as usual."""
    with contextlib.ExitStack() as stack:
        for channel in channels:
            batched = getattr(getattr(channel, "_qos", None), "batched", None)  # no QoS yet: no acks
            if batched is not None:
                stack.enter_context(batched())
        yield


class ReentrantDrain(RuntimeError):
    """Raised when a handler drains the connection that is running it."""


class Inbox:
    """Work that arrived while the connection was busy, run later, one item at a time, in order.

    kombu (py-amqp in particular) reads incoming frames whenever it waits: inside a publish, a
    declare, a confirm wait. Its callbacks only :meth:`put` here; :meth:`run`, called by the
    loop that owns the connection, runs the handlers. A handler may publish, flush or declare:
    what arrives meanwhile waits here, so no handler ever runs inside another.
    """

    def __init__(self) -> None:
        self._work: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._running = False

    def __len__(self) -> int:
        return len(self._work)

    @property
    def running(self) -> bool:
        """True while a handler of this inbox runs."""
        return self._running

    def put(self, handler: Callable[[Any], None], item: Any) -> None:
        self._work.append((handler, item))

    def clear(self) -> None:
        self._work.clear()

    def run(self) -> int:
        """Run what waits (and what it adds) until empty; returns how many items ran.

        Raises:
            ReentrantDrain: when called from one of the handlers it runs.
        """
        if self._running:
            raise ReentrantDrain("a handler drained the connection that runs it")
        self._running = True
        done = 0
        try:
            work = self._work
            while work:
                handler, item = work.popleft()
                handler(item)
                done += 1
        finally:
            self._running = False
        return done


@dataclass(frozen=True, slots=True)
class Subscription:
    """What to consume, restarted after every reconnect."""

    queue: Queue
    handler: Handler
    no_ack: bool
    prefetch: int | None
    exclusive: bool = False
    offset: Callable[[], int | str] | None = None  # a stream's: where to start, asked each time


class _ExclusiveQueue(Queue):
    """A queue consumed with basic.consume ``exclusive`` (kombu's Queue does not pass the flag)."""

    def consume(
        self,
        consumer_tag: str = "",
        callback: Any = None,
        no_ack: bool | None = None,
        nowait: bool = False,
        on_cancel: Any = None,
    ) -> Any:
        return self.channel.basic_consume(
            queue=self.name,
            no_ack=self.no_ack if no_ack is None else no_ack,
            consumer_tag=consumer_tag or "",
            callback=callback,
            nowait=nowait,
            arguments=getattr(self, "consumer_arguments", None),  # set from Queue.attrs
            on_cancel=on_cancel,
            exclusive=True,
        )


def start_consumer(
    channel: Any,
    subscription: Subscription,
    on_message: Callable[[Message], None],
    *,
    amqp: bool,
    declare: bool = True,
) -> Consumer:
    """Consume ``subscription`` on ``channel`` (a channel of its own); ``declare``: (re)declare
    its queue first (not when the topology is predeclared: its connection declared what it may).

    Raises:
        QueueInUse: on RabbitMQ, when the broker refuses the consumer because another
            connection consumes the queue exclusively (or, for an exclusive one, at all). The
            broker closed the channel; the connection stays usable.
    """
    queue = subscription.queue
    if amqp:
        # py-amqp would decode each UTF-8 body to str, and Delivery would encode it back: two
        # passes over a 40 MB listing for nothing. The JSON decoders check UTF-8 themselves.
        channel.auto_decode = False
        if subscription.offset is not None:
            attributes = queue.as_dict()
            attributes["consumer_arguments"] = {"x-stream-offset": subscription.offset()}
            queue = Queue(**attributes)
        if subscription.exclusive:
            queue = _ExclusiveQueue(**queue.as_dict())
    consumer = Consumer(
        channel,
        queues=[queue],
        on_message=on_message,
        no_ack=subscription.no_ack,
        prefetch_count=subscription.prefetch,
        auto_declare=declare,
    )
    try:
        consumer.consume()
    except AccessRefused as exc:  # "queue '...' in exclusive use"
        if "exclusive" not in str(exc):
            raise
        with contextlib.suppress(Exception):  # py-amqp reopened it; it is of no more use
            channel.close()
        raise QueueInUse(str(queue.name)) from None
    return consumer
