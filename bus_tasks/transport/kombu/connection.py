"""``BusConnection``: the :class:`~bus_tasks.transport.bus.Bus` on kombu, from its parts.

The parts: a :class:`~bus_tasks.transport.kombu.link.Link` (connect, back-off, deadlines), the
declared specs (as the kombu entities of :mod:`.entities`), consumers feeding a serial
:class:`~bus_tasks.transport.kombu.consumers.Inbox` (exclusive ones emulated by :mod:`.exclusive`
off RabbitMQ), and the publishing :class:`~bus_tasks.transport.kombu.publishing.Sender` with its
confirm :class:`~bus_tasks.transport.outbox.Outbox`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from kombu.entity import Queue
from kombu.messaging import Consumer

from bus_tasks import names
from bus_tasks.config import redact_url
from bus_tasks.errors import BusTasksError, PublishRefused
from bus_tasks.transport.bus import Delivery, Handler, Position, ReentrantDrain
from bus_tasks.transport.kombu.admin import KombuAdmin
from bus_tasks.transport.kombu.consumers import Inbox, Subscription, acks_batched, start_claimed
from bus_tasks.transport.kombu.declaring import Declarations
from bus_tasks.transport.kombu.exclusive import Claims
from bus_tasks.transport.kombu.link import Link, Retries
from bus_tasks.transport.kombu.publishing import Sender
from bus_tasks.transport.opening import BusOptions
from bus_tasks.transport.outbox import Outgoing
from bus_tasks.transport.topology import EXCHANGES, Spec, Topology

log = logging.getLogger("bus_tasks.transport")

DRAIN_BATCH = 256  # deliveries one drain() takes in without waiting, at most (an aggregator's prefetch)


class BusConnection:
    """One broker connection with its consumers; survives a dropped connection by reconnecting.

    Handlers and confirm callbacks run only from :meth:`drain`, one at a time, in arrival
    order: whatever arrives while a publish, a declare or a confirm wait reads the socket waits
    in the inbox. With ``confirm_publish`` on RabbitMQ, publishes are pipelined: each message
    is kept until the broker confirms it (at most ``max_unconfirmed``) and re-sent after a
    reconnect or a nack. Not thread-safe: use one per thread.
    """

    def __init__(self, url: str, options: BusOptions, stop: threading.Event | None = None) -> None:
        """Built by :func:`bus_tasks.transport.open`, not connected yet."""
        self._link = Link(
            url,
            heartbeat_s=options.heartbeat_s,
            connect_timeout_s=options.connect_timeout_s,
            connect_retries=options.connect_retries,
            redis_key_prefix=options.redis_key_prefix,
            reconnect_max_s=options.reconnect_max_s,
            stop=stop,
            login=options.login,
        )
        self.url = url
        self.is_amqp = self._link.is_amqp
        # Every publish says who sent it; RabbitMQ refuses one whose user_id is not the login's.
        self.user_id = options.login.user(url) if self.is_amqp else None
        self.options = options
        self.topology = Topology(self, options.topology)
        self._subscriptions: list[Subscription] = []
        self._live: list[Consumer] = []
        self._inbox = Inbox()
        self._claims = Claims(self._link.scheme, redis_key_prefix=options.redis_key_prefix)
        self._generation = 0  # bumped by every reconnect attempt: older deliveries are stale
        self.reconnects = 0  # connections lost and re-established (for metrics)
        self._dead_letters_unconfirmed = 0
        self._declarations = Declarations(self._link, self, options.topology)
        self._sender = Sender(
            self._link,
            self._inbox,
            self,
            confirming=options.confirm_publish and self.is_amqp,  # publisher confirms: RabbitMQ only
            max_unconfirmed=options.max_unconfirmed,
            window=options.confirm_window,
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

    @property
    def replays(self) -> bool:
        """RabbitMQ keeps streams, read from a position of one's own; Redis and memory:// do not."""
        return self.is_amqp

    @property
    def predeclared(self) -> bool:
        """The shared topology exists beforehand (RabbitMQ, ``broker-setup``): checked, never declared."""
        return self.is_amqp and self.options.topology.predeclared

    @property
    def link(self) -> Link:
        return self._link

    def admin(self) -> KombuAdmin:
        """Queue depths, consumer counts, gets and deletes on this connection (tools and tests)."""
        return KombuAdmin(self)

    def wakeup_handle(self) -> int | None:
        """The broker socket's descriptor (AMQP, connected), for a select that waits on more than the
        broker; None otherwise. A readable socket means :meth:`drain` has something to read."""
        return self._link.fileno()

    @property
    def connect_timeout_s(self) -> float:
        """The timeout of the next connection attempt (shortened inside :meth:`bounded`)."""
        return float(self._link.conn.connect_timeout)

    def bounded(self, deadline: float) -> AbstractContextManager[None]:
        """Within the block, waiting for the broker gives up at ``deadline`` (``time.monotonic()``):
        connecting and reconnecting (also those that publishing, declaring or draining start)
        then raise one of :attr:`errors` at the deadline instead of retrying on."""
        return self._link.bounded(deadline)

    def connect(self, max_retries: Retries = "default") -> None:
        """Connect now, retrying with back-off (forever unless ``connect_retries`` was given, or
        until the deadline of :meth:`bounded`).

        Raises:
            BrokerRefused: when the broker refuses the login or the vhost (never retried).
        """
        self._link.connect(max_retries)

    # -- topology -------------------------------------------------------------------------

    def declare(self, *specs: Spec) -> None:
        """Declare exchanges and queues, again after every reconnect (see :mod:`.declaring`).
        A connection lost meanwhile (its node killed while a process starts) is recovered and
        the declare made again, unless a handler runs (the loop that drains recovers)."""
        while True:
            try:
                return self._declarations.declare(*specs)
            except self._link.lost_errors:
                if self._inbox.running:
                    raise
                self.recover()

    def prepare(self, exchange: str) -> None:
        """Before the first publish to ``exchange`` on a connection: declare it (virtual transports
        route by the exchange type this connection knows) and, for events, where they are kept
        until an aggregator reads them."""
        self.declare(EXCHANGES[exchange])
        if exchange == names.EVENTS_EXCHANGE:
            self.topology.declare_events()

    def entity(self, queue: str) -> Queue:
        """The kombu queue of this name: as declared here, or as :mod:`bus_tasks.names` spells it."""
        return self._declarations.entity(queue)

    # -- consuming ------------------------------------------------------------------------

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
        """Deliver messages of ``queue`` to ``handler`` during :meth:`drain`. With ``exclusive``,
        this connection is the queue's only consumer, also after a reconnect (see :mod:`.exclusive`).
        With ``replay_from`` (a stream), reading starts at the position it gives (an offset, or
        ``"first"``), asked again at every reconnect. A connection lost meanwhile is recovered.

        Raises:
            QueueInUse: with ``exclusive``, when another connection consumes ``queue`` (this
                connection stays usable).
        """
        subscription = Subscription(self.entity(queue), handler, no_ack, prefetch, exclusive, replay_from)
        self._subscriptions.append(subscription)  # from here on, a reconnect restarts it
        try:
            self.connect()
            self._start(subscription)
        except BusTasksError:  # refused (QueueInUse, BrokerRefused): not to be restarted
            self._subscriptions.remove(subscription)
            raise
        except self._link.lost_errors:  # lost meanwhile: the reconnect starts it with the rest
            if self._inbox.running:
                raise
            self.recover()

    def _start(self, subscription: Subscription, *, patience_s: float = 0.0) -> None:
        """Start consuming; an exclusive queue in use is tried again for ``patience_s``."""
        on_delivery = partial(self._inbox.put, subscription.handler)  # handled later, by drain()
        link, claims, declare = self._link, self._claims, not self.predeclared
        consumer = start_claimed(
            link, claims, subscription, on_delivery, self.staleness(), patience_s=patience_s, declare=declare
        )
        self._live.append(consumer)

    def staleness(self) -> Callable[[], bool]:
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
        if self._sender.broken or self._link.lost:  # lost under an earlier call: not used as it is
            self.recover()
        if self._claims.held:
            self._claims.renew(self._link.channel)
        inbox = self._inbox
        more = lambda: len(inbox) < DRAIN_BATCH  # noqa: E731 - read twice below
        if timeout_s <= 0 and not inbox and self._link.is_amqp:  # no wait: read what came, in chunks
            got = self._link.drain_ready(more)
            return inbox.run() > 0 or got
        got = bool(inbox) or self._link.drain_events(timeout_s)
        # What came is handled before reading on (a lone request is answered without one more
        # read); then what has arrived already: a loop turn's work is shared by its deliveries.
        handled = inbox.run()
        if got:
            self._link.drain_ready(more)
            handled += inbox.run()
        return handled > 0 or got

    def recover(self, max_retries: Retries = "default") -> None:
        """Reconnect after a lost connection: re-declare, restart consumers, re-send unconfirmed.
        Attempts follow the link's back-off; without a bound on retries, keeps trying until
        everything is restored (even if lost again half-way), or the deadline of :meth:`bounded`.

        Raises:
            one of :attr:`errors` when the broker is still unreachable after ``max_retries``
                attempts in a row, or at the deadline.
            BrokerRefused: when the broker refuses the login or the vhost (not retried).
            QueueInUse: when an exclusive queue stays taken by another connection (the lost one
                may linger until its heartbeat times out: tried again for a while first).
        """
        link = self._link
        retries = link.connect_retries if max_retries == "default" else max_retries
        was_connected = link.ever_connected  # else this is the first connection, not a reconnect
        while True:
            if not self._sender.broken:
                self._sender.lost()
            self._live.clear()
            self._generation += 1
            self._inbox.clear(keep_confirmed=True)  # deliveries come again; confirms stand
            self._dead_letters_unconfirmed = 0
            self._sender.reset()
            link.renew()
            link.connect(retries, settle=False)  # waits out the back-off; raises once out of retries
            try:
                self._restore()
                link.succeeded()  # only now is the outage over (its back-off and log lines)
                if was_connected:
                    self.reconnects += 1
                return
            except self.errors as exc:  # lost again half-way: that attempt failed too
                link.failed(exc)
                if link.backoff.exhausted(retries) or link.past_deadline():
                    raise

    def _restore(self) -> None:
        self._declarations.restore()
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
        """Publish one JSON body. With confirms on, returns once the message is sent (not yet
        confirmed): ``on_confirm`` runs, from a later :meth:`drain`, once the broker confirmed it;
        :meth:`flush` waits for every confirm. Without confirms ``on_confirm`` runs from the next
        :meth:`drain`. Events are ``mandatory`` on RabbitMQ (see :meth:`flush`); see :meth:`prepare`.

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
            PublishUnreachable, PublishError: as :meth:`.publishing.Sender.flush` says.
        """
        self._sender.flush(timeout_s)

    # -- settling -------------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a poison message to ``bus_tasks.dead`` with ``reason`` in a header; the original
        is acked only once the dead letter is safely with the broker."""
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

        try:
            self.publish(delivery.body, routing_key=names.DEAD_QUEUE, headers=headers, on_confirm=confirmed)
        except PublishRefused as exc:  # never re-sent: the message goes, logged once
            self._dead_letters_unconfirmed -= 1
            log.warning("dead letter of %s dropped (%s): %s", delivery.routing_key, reason[:200], exc)
            delivery.ack()

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
            if self._claims.held:
                try:
                    self._claims.release(self._link.channel if self._claims.kind == "redis" else None)
                except self.errors:  # Redis away: the lease runs out on its own
                    log.debug("releasing exclusive claims failed", exc_info=True)
            if self.pending and self._link.refused is None:  # refused: said once already
                self.flush(flush_timeout_s)
            self._sender.report_returned(raise_=False)
        except (BusTasksError, *self.errors) as exc:  # type: ignore[misc]
            log.warning("closing %r: %s", self, exc)
        finally:
            self._inbox.clear()
            self._link.release()

    def __enter__(self) -> BusConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
