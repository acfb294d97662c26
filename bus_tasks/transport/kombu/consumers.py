"""Consumers and the serial inbox: kombu's callbacks only queue; the owning loop handles."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import AccessRefused
from kombu.entity import Queue
from kombu.exceptions import MessageStateError
from kombu.message import Message
from kombu.messaging import Consumer

from bus_tasks import names
from bus_tasks.errors import QueueInUse
from bus_tasks.transport.bus import Delivery, Handler, Position, ReentrantDrain
from bus_tasks.transport.kombu.exclusive import Claims
from bus_tasks.transport.kombu.frames import Receiver
from bus_tasks.transport.kombu.link import Link
from bus_tasks.transport.kombu.readiness import REFUSALS, when_ready

EXCLUSIVE_RETRY_S = 0.5  # between attempts to take back an exclusive queue after a reconnect
_STREAM_OFFSET = names.HEADER_STREAM_OFFSET


def _delivery(
    body: bytes | str,
    routing_key: str,
    headers: dict[str, Any],
    props: dict[str, Any],
    ack: Callable[[bool], None],
) -> Delivery:
    """The :class:`Delivery` both builders below make, from a message's parts."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    expiration = props.get("expiration")
    position = headers.get(_STREAM_OFFSET)  # RabbitMQ's, on what it read from a stream
    # Positional, in the order of Delivery's fields: every delivery is made here (keywords cost).
    return Delivery(
        body,
        routing_key,
        headers,
        props.get("reply_to"),
        props.get("correlation_id"),
        int(expiration) if expiration not in (None, "") else None,
        props.get("user_id"),
        ack,
        position if type(position) is int else None,
    )


def delivery_of(message: Message, stale: Callable[[], bool]) -> Delivery:
    """A :class:`Delivery` of a kombu message; acking it does nothing once ``stale()`` is true."""

    def ack(multiple: bool) -> None:
        if not stale():
            message.ack(multiple=multiple)

    routing_key = message.delivery_info.get("routing_key", "")
    return _delivery(message.body, routing_key, dict(message.headers or {}), message.properties, ack)


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


def _run_confirmed(callback: Callable[[], None]) -> None:
    callback()


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

    def confirmed(self, callback: Callable[[], None]) -> None:
        """The callback of a message the broker took: it runs even if the connection is lost
        before the loop gets to it (see :meth:`clear`), for the broker has the message."""
        self._work.append((_run_confirmed, callback))

    def clear(self, *, keep_confirmed: bool = False) -> None:
        """Drop what waits; with ``keep_confirmed`` (a connection lost, not closed), the
        callbacks of :meth:`confirmed` messages stay: only deliveries come again."""
        if keep_confirmed:
            self._work = deque(work for work in self._work if work[0] is _run_confirmed)
        else:
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
    replay_from: Callable[[], Position] | None = None  # a log's: where to start, asked each time


def direct_delivery(
    message: Any, stale: Callable[[], bool], *, no_ack: bool, headers: dict[str, Any] | None = None
) -> Delivery:
    """A :class:`Delivery` of a py-amqp message as its channel hands it over, without kombu's
    ``Message`` (which copies its properties and headers once more); the same fields as
    :func:`delivery_of`, and acked as kombu acks: not at all for a ``no_ack`` consumer, once.
    ``headers``: the message's, when the caller has looked them up already.
    """
    info = message.delivery_info
    if headers is None:
        headers = message.properties.get("application_headers") or {}  # py-amqp's own, new each time
    ack = _acker(message.channel, info["delivery_tag"], stale, no_ack=no_ack)
    return _delivery(message.body, info.get("routing_key", ""), headers, message.properties, ack)


def _acker(channel: Any, tag: int, stale: Callable[[], bool], *, no_ack: bool) -> Callable[[bool], None]:
    """Acks delivery ``tag`` of ``channel`` as kombu acks: not at all for a ``no_ack`` consumer, once."""
    acked = False

    def ack(multiple: bool) -> None:
        nonlocal acked
        if no_ack or stale():
            return
        if acked:
            raise MessageStateError("Message already acknowledged with state: ACK")
        channel.basic_ack(tag, multiple=multiple)
        acked = True

    return ack


class DirectReceiver(Receiver):
    """The callback py-amqp calls with each message of a consumer: its :func:`direct_delivery`
    to ``on_delivery``, or the message to ``kombus_own`` (kombu's own callback) when it has
    kombu's ``compression`` header (kombu's Message decompresses it, or raises, as ever).

    :func:`~bus_tasks.transport.kombu.frames.read_ready` hands it most deliveries in parts
    instead (:meth:`deliver`): the same :class:`Delivery`, without py-amqp's ``Message``.
    """

    __slots__ = ("kombus_own", "no_ack", "on_delivery", "stale")

    def __init__(
        self,
        on_delivery: Callable[[Delivery], None],
        stale: Callable[[], bool],
        *,
        no_ack: bool,
        kombus_own: Callable[[Any], None],
    ) -> None:
        self.on_delivery = on_delivery
        self.stale = stale
        self.no_ack = no_ack
        self.kombus_own = kombus_own

    def __call__(self, message: Any) -> None:
        headers = message.properties.get("application_headers")
        if not headers:
            headers = {}
        elif "compression" in headers:
            self.kombus_own(message)
            return
        self.on_delivery(direct_delivery(message, self.stale, no_ack=self.no_ack, headers=headers))

    def deliver(
        self, body: bytes, routing_key: str, properties: dict[str, Any], channel: Any, tag: int
    ) -> bool:
        headers = properties.get("application_headers")
        if not headers:
            headers = {}
        elif "compression" in headers:
            return False  # py-amqp makes its Message, for kombu
        ack = _acker(channel, tag, self.stale, no_ack=self.no_ack)
        self.on_delivery(_delivery(body, routing_key, headers, properties, ack))
        return True


def _consumed_as(
    queue: Queue,
    *,
    exclusive: bool,
    direct: Callable[[Callable[[Any], None]], Callable[[Any], None]] | None,
) -> Queue:
    """``queue``, consumed with basic.consume ``exclusive`` (kombu's Queue does not pass the
    flag), and with ``direct`` given, its deliveries handed to ``direct(kombus_own)`` (called
    once a consume) as py-amqp's messages, ``kombus_own`` being the callback kombu's consumer
    would have had.

    A class of its own each time: kombu copies queues from their attributes (``as_dict``).
    """

    class Consumed(Queue):
        def consume(
            self,
            consumer_tag: str = "",
            callback: Any = None,
            no_ack: bool | None = None,
            nowait: bool = False,
            on_cancel: Any = None,
        ) -> Any:
            if direct is not None and callback is not None:
                callback = direct(callback)
            return self.channel.basic_consume(
                queue=self.name,
                no_ack=self.no_ack if no_ack is None else no_ack,
                consumer_tag=consumer_tag or "",
                callback=callback,
                nowait=nowait,
                arguments=getattr(self, "consumer_arguments", None),  # set from Queue.attrs
                on_cancel=on_cancel,
                exclusive=exclusive,
            )

    return Consumed(**queue.as_dict())


def start_consumer(
    channel: Any,
    subscription: Subscription,
    on_delivery: Callable[[Delivery], None],
    stale: Callable[[], bool],
    *,
    amqp: bool,
    declare: bool = True,
) -> Consumer:
    """Consume ``subscription`` on ``channel`` (a channel of its own), each message handed to
    ``on_delivery`` (acking does nothing once ``stale()``); ``declare``: (re)declare its queue
    first (not when the topology is predeclared: its connection declared what it may).

    Raises:
        QueueInUse: on RabbitMQ, when the broker refuses the consumer because another
            connection consumes the queue exclusively (or, for an exclusive one, at all). The
            broker closed the channel; the connection stays usable.
    """
    queue = subscription.queue

    def on_message(message: Message) -> None:
        on_delivery(delivery_of(message, stale))

    if amqp:
        # py-amqp would decode each UTF-8 body to str, and Delivery would encode it back: two
        # passes over a 40 MB listing for nothing. The JSON decoders check UTF-8 themselves.
        channel.auto_decode = False
        if subscription.replay_from is not None:
            attributes = queue.as_dict()
            attributes["consumer_arguments"] = {names.HEADER_STREAM_OFFSET: subscription.replay_from()}
            queue = Queue(**attributes)
        no_ack = subscription.no_ack

        def direct(kombus_own: Callable[[Any], None]) -> Callable[[Any], None]:
            return DirectReceiver(on_delivery, stale, no_ack=no_ack, kombus_own=kombus_own)

        queue = _consumed_as(queue, exclusive=subscription.exclusive, direct=direct)
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


def start_claimed(
    link: Link,
    claims: Claims,
    subscription: Subscription,
    on_delivery: Callable[[Delivery], None],
    stale: Callable[[], bool],
    *,
    patience_s: float,
    declare: bool = True,
) -> Consumer:
    """Claim the queue if ``subscription`` is exclusive, then consume it on a channel of its own;
    an exclusive queue in use is tried again for ``patience_s``, a queue not ready yet (see
    :mod:`.readiness`) until it is.

    Raises:
        QueueInUse: when it stays taken (another connection consumes it exclusively).
    """
    give_up_at = time.monotonic() + patience_s

    def consume() -> Consumer:
        channel = link.new_channel()
        try:
            return start_consumer(
                channel, subscription, on_delivery, stale, amqp=link.is_amqp, declare=declare
            )
        except REFUSALS:  # the broker closed the channel (py-amqp reopened it): of no more use
            with contextlib.suppress(Exception):
                channel.close()
            raise

    while True:
        try:
            if subscription.exclusive:
                amqp = claims.kind == "amqp"  # its lock is refused on a channel of its own
                channel = link.new_channel() if amqp else link.channel
                claims.claim(channel, str(subscription.queue.name))
            return when_ready(link, f"queue {subscription.queue.name}", consume)
        except QueueInUse:
            left_s = give_up_at - time.monotonic()
            if left_s <= 0 or link.past_deadline():
                raise
            link.check_stop()
            link.pause(min(EXCLUSIVE_RETRY_S, left_s))
