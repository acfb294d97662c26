"""``BusConnection``: the :class:`~bus_tasks.transport.bus.Bus` on kombu, from its parts.

The parts: a :class:`~bus_tasks.transport.link.Link` (connect, back-off, deadlines), the
topology (kombu entities of the names in :mod:`bus_tasks.names`), consumers feeding a serial
:class:`~bus_tasks.transport.consumers.Inbox` (exclusive ones emulated by
:mod:`~bus_tasks.transport.exclusive` off RabbitMQ), and the publishing
:class:`~bus_tasks.transport.publishing.Sender` with its confirm
:class:`~bus_tasks.transport.outbox.Outbox`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from amqp.exceptions import PreconditionFailed
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer

from bus_tasks import names
from bus_tasks.broker_login import NO_LOGIN, BrokerLogin
from bus_tasks.config import DEFAULT_CONNECT_TIMEOUT_S, redact_url
from bus_tasks.errors import BusTasksError, QueueInUse, TopologyMismatch
from bus_tasks.transport import admin, topology
from bus_tasks.transport.bus import Delivery, Handler
from bus_tasks.transport.consumers import (
    Inbox,
    ReentrantDrain,
    Subscription,
    acks_batched,
    delivery_of,
    start_consumer,
)
from bus_tasks.transport.exclusive import Claims
from bus_tasks.transport.link import Link, Retries
from bus_tasks.transport.outbox import Outgoing
from bus_tasks.transport.publishing import Sender

log = logging.getLogger("bus_tasks.transport")

EXCLUSIVE_RETRY_S = 0.5  # between attempts to take back an exclusive queue after a reconnect
DRAIN_BATCH = 256  # deliveries one drain() takes in without waiting, at most (an aggregator's prefetch)


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
        topology_options: topology.TopologyOptions = topology.DEFAULT_OPTIONS,
        login: BrokerLogin = NO_LOGIN,
    ) -> None:
        self._link = Link(
            url,
            heartbeat_s=heartbeat_s,
            connect_timeout_s=connect_timeout_s,
            connect_retries=connect_retries,
            redis_key_prefix=redis_key_prefix,
            reconnect_max_s=reconnect_max_s,
            stop=stop,
            login=login,
        )
        self.url = url
        self.is_amqp = self._link.is_amqp
        # Every publish says who sent it; RabbitMQ refuses one whose user_id is not the login's.
        self.user_id = login.user(url) if self.is_amqp else None
        self.options = topology_options
        self._subscriptions: list[Subscription] = []
        self._live: list[Consumer] = []
        self._inbox = Inbox()
        self._claims = Claims(self._link.scheme, redis_key_prefix=redis_key_prefix)
        self._generation = 0  # bumped by every reconnect attempt: older deliveries are stale
        self.reconnects = 0  # connections lost and re-established (for metrics)
        self._dead_letters_unconfirmed = 0
        self._declared: list[Queue | Exchange] = []
        self._queues: dict[str, Queue] = {}  # name -> entity, for queues declared here
        self._sender = Sender(
            self._link,
            self._inbox,
            self,
            confirming=confirm_publish and self.is_amqp,  # publisher confirms: RabbitMQ only
            max_unconfirmed=max_unconfirmed,
            window=confirm_window,
        )

    def __repr__(self) -> str:
        return f"BusConnection({redact_url(self.url)!r})"

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection or channel was lost."""
        return self._link.errors

    @property
    def pending(self) -> int:
        """Messages published but not yet confirmed by the broker."""
        return self._sender.pending

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
        until the deadline of :meth:`bounded`).

        Raises:
            BrokerRefused: when the broker refuses the login or the vhost (never retried).
        """
        self._link.connect(max_retries)

    # -- topology -------------------------------------------------------------------------

    def _declare(self, *entities: Queue | Exchange) -> None:
        """Declare exchanges and queues (with their bindings); re-declared after a reconnect.

        Raises:
            TopologyMismatch: when a queue exists with other arguments (RabbitMQ keeps them).
        """
        self.connect()
        channel = self._link.channel
        for entity in entities:
            # bind() makes a bound copy: the module-level entities stay unbound and shareable.
            try:
                self._declare_one(entity.bind(channel))
            except PreconditionFailed as exc:
                raise TopologyMismatch(str(entity.name), exc.reply_text or str(exc)) from exc
            if entity not in self._declared:
                self._declared.append(entity)
            if isinstance(entity, Queue):
                self._queues[entity.name] = entity

    def _declare_one(self, bound: Queue | Exchange) -> None:
        if self.is_amqp and self.options.predeclared:
            topology.declare_on_predeclared(bound)
        else:
            bound.declare()

    def _declare_shared(self, entity: Queue) -> None:
        """A queue that others may have declared first with arguments of their own (the event
        log, a control queue): used as it is when it exists, declared as configured otherwise."""
        if self.is_amqp and self.queue_exists(str(entity.name)):
            self._queues[str(entity.name)] = entity  # durable: nothing to declare again later
            return
        for item in entity.bindings or ():
            self._declare(item.exchange)
        if entity.exchange is not None and entity.exchange.name:
            self._declare(entity.exchange)
        self._declare(entity)

    @property
    def uses_stream(self) -> bool:
        """Events are read from the stream (RabbitMQ with ``event_log = "stream"``)."""
        return self.is_amqp and self.options.event_log == "stream"

    @property
    def events_source(self) -> str:
        """The queue an aggregator reads events from: the stream, or its own events queue."""
        return names.EVENT_LOG if self.uses_stream else names.events_queue(self.options.replica)

    def declare_exchanges(self) -> None:
        self._declare(topology.EVENTS_EXCHANGE, topology.CONTROL_EXCHANGE, topology.CHANGES_EXCHANGE)

    def declare_events(self) -> None:
        """Where events are kept until an aggregator reads them: the stream, or the events queue
        of an aggregator of this configuration's name (what a publisher declares)."""
        if self.uses_stream:
            self._declare_shared(topology.event_log(self.options))
        else:
            self._declare(topology.events_queue(self.options.replica))

    def declare_topology(self) -> None:
        """The aggregator's side of the bus: events in, RPC in, control out, dead letters.

        Raises:
            TopologyMismatch: when the RPC queue exists with another ``queue_type``.
        """
        self.declare_exchanges()
        self.declare_events()
        self._declare(topology.rpc_queue(self.options.queue_type), topology.dead_queue())

    def declare_queue(self, queue: str) -> None:
        """Declare a queue of :mod:`bus_tasks.names` (events, RPC, dead letters, a control queue)."""
        entity = topology.well_known(queue, self.options)
        for item in entity.bindings or ():
            self._declare(item.exchange)
        if entity.exchange is not None and entity.exchange.name:
            self._declare(entity.exchange)
        self._declare(entity)

    def declare_control_queue(self, subsystem: str) -> str:
        """A subsystem's durable command queue (kept while the subsystem is offline); its name.

        One that exists is used as it is (whoever declared it first, a subsystem or an
        aggregator that forwards to it).
        """
        name = names.control_queue(subsystem)
        self._declare_shared(topology.control_queue(subsystem))
        return name

    def declare_replica_queue(self, prefix: str) -> str:
        """A new queue of this connection's own, deleted when its consumer goes; its name."""
        queue = topology.replica_rpc_queue(prefix)
        self._declare(queue)
        return str(queue.name)

    def declare_presence_queue(self) -> str:
        """A new private queue of every heartbeat (subsystems' and aggregators'); its name."""
        self.declare_exchanges()
        queue = topology.presence_queue()
        self._declare(queue)
        return str(queue.name)

    def declare_watch_queue(self) -> str:
        """A new private queue of every aggregator's change feed; its name."""
        self._declare(topology.CHANGES_EXCHANGE)
        queue = topology.watch_queue()
        self._declare(queue)
        return str(queue.name)

    def declare_reply_queue(self, prefix: str) -> str:
        """A new private, self-deleting queue for replies; returns its name."""
        queue = topology.reply_queue(prefix)
        self._declare(queue)
        return str(queue.name)

    def _entity(self, queue: str) -> Queue:
        entity = self._queues.get(queue)
        return entity if entity is not None else topology.well_known(queue, self.options)

    # -- consuming ------------------------------------------------------------------------

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

        With ``exclusive``, this connection is the queue's only consumer, also after a
        reconnect (see :mod:`.exclusive`). With ``offset`` (a stream), reading starts at the
        offset it gives (an int, or ``"first"``), asked again at every reconnect.

        Raises:
            QueueInUse: with ``exclusive``, when another connection consumes ``queue`` (this
                connection stays usable).
        """
        subscription = Subscription(self._entity(queue), handler, no_ack, prefetch, exclusive, offset)
        self._subscriptions.append(subscription)  # from here on, a reconnect restarts it
        try:
            self.connect()
            self._start(subscription)
        except BusTasksError:  # refused (QueueInUse, BrokerRefused): not to be restarted
            self._subscriptions.remove(subscription)
            raise

    def _start(self, subscription: Subscription, *, patience_s: float = 0.0) -> None:
        """Start consuming; an exclusive queue in use is tried again for ``patience_s``."""
        handler = subscription.handler
        inbox = self._inbox
        stale = self._staleness()

        def on_message(message: Message) -> None:
            inbox.put(handler, delivery_of(message, stale))

        give_up_at = time.monotonic() + patience_s
        while True:
            try:
                if subscription.exclusive:
                    amqp = self._claims.kind == "amqp"  # its lock is refused on a channel of its own
                    channel = self._link.new_channel() if amqp else self._link.channel
                    self._claims.claim(channel, str(subscription.queue.name))
                consumer = start_consumer(
                    self._link.new_channel(),
                    subscription,
                    on_message,
                    amqp=self.is_amqp,
                    declare=not (self.is_amqp and self.options.predeclared),
                )
                break
            except QueueInUse:
                left_s = give_up_at - time.monotonic()
                if left_s <= 0 or self._link.past_deadline():
                    raise
                self._link.check_stop()
                self._link.pause(min(EXCLUSIVE_RETRY_S, left_s))
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
            QueueInUse: on Redis, when an exclusive queue's lease ran out and another took it.
        """
        if self._inbox.running:
            raise ReentrantDrain("a handler drained the connection that runs it")
        if self._sender.broken:
            self.recover()
        if self._claims.held:
            self._claims.renew(self._link.channel)
        got = bool(self._inbox) or self._link.drain_events(timeout_s)
        # Then what has arrived already, without waiting: the loop's work per turn (its flushes,
        # its change feed) is shared by the deliveries of a turn instead of paid by each.
        while got and len(self._inbox) < DRAIN_BATCH and self._link.drain_events(0):
            pass
        return self._inbox.run() > 0 or got

    def recover(self, max_retries: Retries = "default") -> None:
        """Reconnect after a lost connection: re-declare, restart consumers, re-send unconfirmed.

        Attempts follow the link's back-off (0.1 s doubling to ``reconnect_max_s``); without a
        bound on retries, keeps trying until everything is restored, even if the connection
        drops again half-way, or until the deadline of :meth:`bounded`.

        Raises:
            one of :attr:`errors` when the broker is still unreachable after ``max_retries``
                attempts in a row, or at the deadline.
            BrokerRefused: when the broker refuses the login or the vhost (not retried).
            QueueInUse: when an exclusive queue stays taken by another connection (the lost
                one may linger at the broker until its heartbeat times out: tried again for a
                while first).
        """
        link = self._link
        retries = link.connect_retries if max_retries == "default" else max_retries
        was_connected = link.ever_connected  # else this is the first connection, not a reconnect
        while True:
            if not self._sender.broken:
                self._sender.lost()
            self._live.clear()
            self._generation += 1
            self._inbox.clear()  # deliveries of the lost connection come again on the new one
            self._dead_letters_unconfirmed = 0
            self._sender.reset()
            link.renew()
            link.connect(retries)  # waits out the back-off; raises once out of retries
            try:
                self._restore()
                if was_connected:
                    self.reconnects += 1
                return
            except self.errors as exc:  # lost again half-way: that attempt failed too
                link.failed(exc)
                if link.backoff.exhausted(retries) or link.past_deadline():
                    raise

    def _restore(self) -> None:
        channel = self._link.channel
        for entity in self._declared:
            self._declare_one(entity.bind(channel))
        patience_s = max(10.0, 2 * self._link.heartbeat_s + 5.0)  # the broker's heartbeat timeout
        for subscription in self._subscriptions:
            self._start(subscription, patience_s=patience_s)
        self._sender.broken = False
        log.info("broker connection to %s re-established; re-sending %d", redact_url(self.url), self.pending)
        self._sender.pump()

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
        every confirm. Without confirms ``on_confirm`` runs from the next :meth:`drain`. The
        first event published on a connection declares the events queue; events are
        ``mandatory`` on RabbitMQ (see :meth:`flush`).

        Raises:
            PublishError: when ``max_unconfirmed`` messages already wait for the broker.
            BrokerRefused: when the broker refuses the login or the vhost.
        """
        message = Outgoing(
            body, exchange, routing_key, headers or {}, reply_to, correlation_id,
            expiration_s, persistent, on_confirm,
        )  # fmt: skip
        self._sender.publish(message)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker has confirmed every message published so far.

        Raises:
            PublishUnreachable: when messages wait because the broker is unreachable (at
                ``timeout_s``, or at once when ``connect_retries`` are spent); it names the
                broker and the last connection error.
            PublishError: when some are still unconfirmed at ``timeout_s``; or when the broker
                returned messages it could not route (e.g. no events queue) since the last
                flush, naming how many and their routing keys.
        """
        self._sender.flush(timeout_s)

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
        with acks_batched(consumer.channel for consumer in self._live):  # Redis: one pipeline
            for delivery in deliveries:
                delivery.ack()

    # -- tools ----------------------------------------------------------------------------

    def queue_exists(self, queue: str) -> bool | None:
        """Whether ``queue`` exists on RabbitMQ (a passive declare, on a channel of its own);
        None elsewhere: Redis and memory:// keep no record of an empty queue's existence."""
        if not self.is_amqp:
            return None
        self.connect()
        return admin.queue_exists(self._link.new_channel(), queue)

    def consumer_count(self, queue: str, *, passive: bool = False) -> int | None:
        """Consumers attached to ``queue`` on RabbitMQ; None elsewhere (no transport counts).

        Declares the queue if missing, unless ``passive``: then a missing queue counts 0 and
        stays missing.
        """
        if not self.is_amqp:
            return None  # the virtual transports do not count consumers
        self.connect()
        if passive or self.options.predeclared:
            return admin.passive_consumer_count(self._link.new_channel(), queue) or 0
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
        """Cancel consumers, release exclusive claims, wait (bounded) for outstanding confirms,
        then disconnect. A connection whose broker stays unreachable does not wait for it.

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
            self._release_claims()
            if self.pending and self._link.refused is None:  # refused: said once already
                self.flush(flush_timeout_s)
            self._sender.report_returned(raise_=False)
        except (BusTasksError, *self.errors) as exc:  # type: ignore[misc]
            log.warning("closing %r: %s", self, exc)
        finally:
            self._inbox.clear()
            self._link.release()

    def _release_claims(self) -> None:
        if not self._claims.held:
            return
        try:
            self._claims.release(self._link.channel if self._claims.kind == "redis" else None)
        except self.errors:  # Redis away: the lease runs out on its own
            log.debug("releasing exclusive claims failed", exc_info=True)

    def __enter__(self) -> BusConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
