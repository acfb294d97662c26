"""``BusConnection``: the :class:`~bus_tasks.transport.bus.Bus` on kombu, from its parts.

The parts: a :class:`~bus_tasks.transport.link.Link` (connect, recover, deadlines), the
topology (kombu entities of the names in :mod:`bus_tasks.names`), consumers feeding a serial
:class:`~bus_tasks.transport.consumers.Inbox`, and the confirm
:class:`~bus_tasks.transport.outbox.Outbox`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from bus_tasks import names
from bus_tasks.config import DEFAULT_CONNECT_TIMEOUT_S, redact_url
from bus_tasks.errors import PublishError, ShutdownRequested
from bus_tasks.transport import admin, topology
from bus_tasks.transport.bus import Delivery, Handler
from bus_tasks.transport.consumers import Inbox, ReentrantDrain, Subscription, delivery_of, start_consumer
from bus_tasks.transport.link import Link, Retries
from bus_tasks.transport.outbox import Outbox, Outgoing

log = logging.getLogger("bus_tasks.transport")


def _call(callback: Callable[[], None]) -> None:
    callback()


class BusConnection:
    """One broker connection with its consumers; survives a dropped connection by reconnecting.

    Handlers and confirm callbacks run only from :meth:`drain`, one at a time, in arrival
    order: whatever arrives while a publish, a declare or a confirm wait reads the socket waits
    in the inbox. With ``confirm_publish`` on RabbitMQ, publishes are pipelined: each message
    is kept until the broker confirms it (at most ``max_unconfirmed``) and re-sent after a
    reconnect or a nack. Not thread-safe: use one per thread.
    """

    def __init__(
        self,
        url: str,
        *,
        confirm_publish: bool = False,
        heartbeat_s: float = 0.0,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        connect_retries: int | None = None,
        redis_key_prefix: str = "",
        reconnect_max_s: float = 5.0,
        max_unconfirmed: int = 10_000,
        confirm_window: int = 1_000,
        stop: threading.Event | None = None,
    ) -> None:
        self._link = Link(
            url,
            heartbeat_s=heartbeat_s,
            connect_timeout_s=connect_timeout_s,
            connect_retries=connect_retries,
            redis_key_prefix=redis_key_prefix,
            reconnect_max_s=reconnect_max_s,
            stop=stop,
        )
        self.url = url
        self.is_amqp = self._link.is_amqp
        self._subscriptions: list[Subscription] = []
        self._live: list[Consumer] = []
        self._inbox = Inbox()
        self._generation = 0  # bumped by every reconnect attempt: older deliveries are stale
        self._dead_letters_unconfirmed = 0
        self._producer: Producer | None = None
        self._declared: list[Queue | Exchange] = []
        self._queues: dict[str, Queue] = {}  # name -> entity, for queues declared here
        self._exchanges_declared: set[str] = set()
        # Publisher confirms (RabbitMQ only).
        self._confirming = confirm_publish and self.is_amqp
        self._max_unconfirmed = max_unconfirmed
        self._confirm_window = min(confirm_window, max_unconfirmed)
        self._outbox = Outbox()
        self._pumping = False
        self._broken = False

    def __repr__(self) -> str:
        return f"BusConnection({redact_url(self.url)!r})"

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection or channel was lost."""
        return self._link.errors

    @property
    def pending(self) -> int:
        """Messages published but not yet confirmed by the broker."""
        return len(self._outbox)

    def fileno(self) -> int | None:
        """The broker socket's descriptor (AMQP, connected), for a select that waits on more than the
        broker; None otherwise. A readable socket means :meth:`drain` has something to read."""
        if not self.is_amqp:
            return None
        sock = getattr(getattr(self._link.conn, "_connection", None), "sock", None)
        try:
            return None if sock is None else int(sock.fileno())
        except OSError:
            return None

    @property
    def connect_timeout_s(self) -> float:
        """The timeout of the next connection attempt (shortened inside :meth:`bounded`)."""
        return float(self._link.conn.connect_timeout)

    def bounded(self, deadline: float) -> AbstractContextManager[None]:
        """Within the block, waiting for the broker gives up at ``deadline`` (``time.monotonic()``).

        Connecting and reconnecting (also those that publishing, declaring or draining start)
        then raise one of :attr:`errors` at the deadline instead of retrying on.
        """
        return self._link.bounded(deadline)

    def connect(self, max_retries: Retries = "default") -> None:
        """Connect now, retrying with back-off (forever unless ``connect_retries`` was given, or
        until the deadline of :meth:`bounded`)."""
        self._link.connect(max_retries)

    # -- topology -------------------------------------------------------------------------

    def _declare(self, *entities: Queue | Exchange) -> None:
        """Declare exchanges and queues (with their bindings); re-declared after a reconnect."""
        self.connect()
        channel = self._link.channel
        for entity in entities:
            # bind() makes a bound copy: the module-level entities stay unbound and shareable.
            entity.bind(channel).declare()
            if entity not in self._declared:
                self._declared.append(entity)
            if isinstance(entity, Queue):
                self._queues[entity.name] = entity

    def declare_exchanges(self) -> None:
        self._declare(topology.EVENTS_EXCHANGE, topology.CONTROL_EXCHANGE)

    def declare_topology(self) -> None:
        """The aggregator's side of the bus: events in, RPC in, control out, dead letters."""
        self.declare_exchanges()
        self._declare(topology.events_queue(), topology.rpc_queue(), topology.dead_queue())

    def declare_queue(self, queue: str) -> None:
        """Declare a queue of :mod:`bus_tasks.names` (events, RPC, dead letters, a control queue)."""
        entity = topology.well_known(queue)
        for item in entity.bindings or ():
            self._declare(item.exchange)
        if entity.exchange is not None and entity.exchange.name:
            self._declare(entity.exchange)
        self._declare(entity)

    def declare_control_queue(self, subsystem: str) -> str:
        """A subsystem's durable command queue (kept while the subsystem is offline); its name."""
        name = names.control_queue(subsystem)
        self.declare_queue(name)
        return name

    def declare_reply_queue(self, prefix: str) -> str:
        """A new private, self-deleting queue for replies; returns its name."""
        queue = topology.reply_queue(prefix)
        self._declare(queue)
        return str(queue.name)

    def _entity(self, queue: str) -> Queue:
        entity = self._queues.get(queue)
        return entity if entity is not None else topology.well_known(queue)

    # -- consuming ------------------------------------------------------------------------

    def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        no_ack: bool = False,
        prefetch: int | None = None,
    ) -> None:
        """Deliver messages of ``queue`` to ``handler`` during :meth:`drain`."""
        subscription = Subscription(self._entity(queue), handler, no_ack, prefetch)
        self._subscriptions.append(subscription)
        self.connect()
        self._start(subscription)

    def _start(self, subscription: Subscription) -> None:
        handler = subscription.handler
        inbox = self._inbox
        stale = self._staleness()

        def on_message(message: Message) -> None:
            inbox.put(handler, delivery_of(message, stale))

        consumer = start_consumer(self._link.new_channel(), subscription, on_message, amqp=self.is_amqp)
        self._live.append(consumer)

    def _staleness(self) -> Callable[[], bool]:
        """A test of whether the connection current now has since been replaced."""
        generation = self._generation
        return lambda: generation != self._generation

    def drain(self, timeout_s: float) -> bool:
        """Handle what arrives within ``timeout_s``, one delivery at a time; False when nothing did.

        What arrived meanwhile (during a publish or a confirm wait) is handled first, without
        waiting. Handlers may publish, flush and declare; they must not drain.

        Raises:
            the transport's connection errors (see :attr:`errors`); call :meth:`recover`.
            ReentrantDrain: when called from a handler of this connection.
        """
        if self._inbox.running:
            raise ReentrantDrain("a handler drained the connection that runs it")
        if self._broken:
            self.recover()
        got = bool(self._inbox) or self._link.drain_events(timeout_s)
        return self._inbox.run() > 0 or got

    def recover(self, max_retries: Retries = "default") -> None:
        """Reconnect after a lost connection: re-declare, restart consumers, re-send unconfirmed.

        Without a bound on retries, keeps trying (with back-off) until everything is restored,
        even if the connection drops again half-way, or until the deadline of :meth:`bounded`.

        Raises:
            one of :attr:`errors` when the broker is still unreachable after ``max_retries`` or
            at the deadline.
        """
        link = self._link
        retries = link.connect_retries if max_retries == "default" else max_retries
        delay_s = 0.1
        while True:
            try:
                self._reconnect(max_retries)
                return
            except self.errors as exc:
                if retries is not None or link.past_deadline():
                    raise
                log.warning(
                    "reconnecting to %s failed (%s); again in %.1fs", redact_url(self.url), exc, delay_s
                )
                link.check_stop()
                link.pause(min(delay_s, link.remaining() or delay_s))
                delay_s = min(delay_s * 2, link.reconnect_max_s)

    def _reconnect(self, max_retries: Retries) -> None:
        log.warning("reconnecting to %s", redact_url(self.url))
        if not self._broken:
            self._lost()
        self._live.clear()
        self._generation += 1
        self._inbox.clear()  # deliveries of the lost connection come again on the new one
        self._dead_letters_unconfirmed = 0
        self._producer = None
        self._exchanges_declared.clear()
        self._link.renew()
        self._link.connect(max_retries)
        channel = self._link.channel
        for entity in self._declared:
            entity.bind(channel).declare()
        for subscription in self._subscriptions:
            self._start(subscription)
        self._broken = False
        log.info("broker connection to %s re-established; re-sending %d", redact_url(self.url), self.pending)
        self._pump()

    def _lost(self) -> None:
        log.warning("broker connection to %s lost with %d unconfirmed", redact_url(self.url), self.pending)
        self._outbox.lost()
        self._broken = True

    # -- publishing -----------------------------------------------------------------------

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
    ) -> None:
        """Publish one JSON body.

        With confirms on, returns once the message is sent (not yet confirmed): ``on_confirm``
        runs, from a later :meth:`drain`, once the broker confirmed it; :meth:`flush` waits for
        every confirm. Without confirms ``on_confirm`` runs from the next :meth:`drain`.

        Raises:
            PublishError: when ``max_unconfirmed`` messages already wait for the broker.
        """
        message = Outgoing(
            body, exchange, routing_key, headers or {}, reply_to, correlation_id,
            expiration_s, persistent, on_confirm,
        )  # fmt: skip
        if not self._confirming:
            if self._broken:
                # Restore consumers first: a request sent before its reply queue is back
                # would be answered to nowhere.
                self.recover()
            self._send(message)
            if on_confirm is not None:
                self._inbox.put(_call, on_confirm)
            return
        if self.pending >= self._max_unconfirmed:
            self._await_confirms(self._max_unconfirmed - 1, deadline=time.monotonic() + 1.0)
            if self.pending >= self._max_unconfirmed:
                raise PublishError(
                    f"{self.pending} messages wait for confirmation by {redact_url(self.url)}"
                    f" (the bound is {self._max_unconfirmed}): is the broker reachable?"
                )
        self._outbox.add(message)
        self._pump()
        if not self._broken and self._outbox.unconfirmed >= self._confirm_window:
            self._await_confirms(self._confirm_window // 2, deadline=None)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker has confirmed every message published so far.

        Raises:
            PublishError: when some are still unconfirmed at ``timeout_s``.
        """
        if not self._confirming:
            return
        self._await_confirms(0, deadline=time.monotonic() + timeout_s)
        if self.pending:
            raise PublishError(f"{self.pending} messages not confirmed by the broker within {timeout_s:g}s")

    def _await_confirms(self, at_most: int, *, deadline: float | None) -> None:
        """Read confirms (reconnecting and re-sending as needed) until ``pending <= at_most``."""
        while self.pending > at_most:
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                if self._broken or self._outbox.unsent:
                    self._pump()  # reconnects once if needed; re-sends what was nacked
                self._link.drain_events(0.1)
            except self.errors:
                self._lost()

    def _pump(self) -> None:
        """Send what waits, in order; on a lost connection keep it for after a reconnect."""
        if self._pumping:
            return  # a reconnect inside the send loop: the loop below goes on sending
        self._pumping = True
        try:
            if self._broken:
                self.recover(max_retries=1)  # publishing must not hang while the broker is away
            outbox = self._outbox
            while (message := outbox.head()) is not None:
                self._send(message)
                outbox.sent()
        except self.errors:
            self._lost()
        finally:
            self._pumping = False

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        for callback in self._outbox.ack(delivery_tag, multiple=multiple):
            self._inbox.put(_call, callback)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        refused = self._outbox.nack(delivery_tag, multiple=multiple)
        log.warning("broker refused %d messages; re-sending them", refused)

    def _send(self, message: Outgoing) -> None:
        if self._producer is None:
            self.connect()
            channel: Any = self._link.channel  # py-amqp's channel: confirms are its extension
            if self._confirming:
                channel.confirm_select()
                channel.events["basic_ack"].add(self._on_ack)
                channel.events["basic_nack"].add(self._on_nack)
            self._producer = Producer(channel)
        if message.exchange and message.exchange not in self._exchanges_declared:
            # Virtual transports (redis, memory) route by the exchange type this connection knows.
            self._declare(topology.EXCHANGES[message.exchange])
            self._exchanges_declared.add(message.exchange)
        self._producer.publish(
            message.body,
            exchange=message.exchange,
            routing_key=message.routing_key,
            content_type=names.CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2 if message.persistent else 1,
            headers=message.headers,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            expiration=message.expiration_s,
            retry=False,
        )

    # -- settling -------------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a poison message to ``bus_tasks.dead`` with ``reason`` in a header.

        The original is acked only once the dead letter is safely with the broker.
        """
        headers = {
            names.HEADER_REASON: reason[:1000],
            "x-original-routing-key": delivery.routing_key,
        }
        self._dead_letters_unconfirmed += 1
        generation = self._generation

        def confirmed() -> None:
            if generation == self._generation:  # else the counter was reset by the reconnect
                self._dead_letters_unconfirmed -= 1
            delivery.ack()

        self.publish(delivery.body, routing_key=names.DEAD_QUEUE, headers=headers, on_confirm=confirmed)

    def ack_all(self, deliveries: list[Delivery]) -> None:
        """Ack deliveries of one consumer, in order: on RabbitMQ with one frame when it is safe."""
        if not deliveries:
            return
        if self.is_amqp and self._dead_letters_unconfirmed == 0:
            # multiple=True acks every earlier delivery of the channel too: all of them are in
            # the batch unless a dead letter still waits for its confirm (then one by one).
            deliveries[-1].ack(multiple=True)
            return
        for delivery in deliveries:
            delivery.ack()

    # -- tools ----------------------------------------------------------------------------

    def consumer_count(self, queue: str) -> int | None:
        """Consumers attached to ``queue`` on RabbitMQ (declares it if missing); None elsewhere."""
        if not self.is_amqp:
            return None  # the virtual transports do not count consumers
        self.connect()
        return admin.consumer_count(self._link.channel, self._entity(queue))

    def queue_size(self, queue: str) -> int:
        """Messages ready in ``queue`` (declares it if missing)."""
        self.connect()
        return admin.queue_size(self._link.channel, self._entity(queue))

    def get(self, queue: str) -> Delivery | None:
        """Fetch one message from ``queue`` without consuming (for tools and tests)."""
        self.connect()
        return admin.get(self._link.channel, self._entity(queue), self._staleness())

    def delete_queues(self, queue_names: list[str]) -> None:
        """Delete queues by name (tools and test teardown)."""
        self.connect()
        admin.delete_queues(self._link.channel, queue_names)

    def close(self, flush_timeout_s: float = 10.0) -> None:
        """Cancel consumers, wait (bounded) for outstanding confirms, then disconnect.

        No handler runs any more: what is in the inbox is dropped (unacked, it is redelivered).
        """
        try:
            for consumer in self._live:
                try:
                    consumer.cancel()
                except Exception:
                    log.debug("cancelling a consumer failed", exc_info=True)
            self._live.clear()
            self._subscriptions.clear()
            self._inbox.clear()
            if self.pending:
                self.flush(flush_timeout_s)
        except (PublishError, ShutdownRequested, *self.errors) as exc:  # type: ignore[misc]
            log.warning("closing %r: %s", self, exc)
        finally:
            self._inbox.clear()
            self._link.release()

    def __enter__(self) -> BusConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
