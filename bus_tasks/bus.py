"""The only module that imports kombu: connections, topology, publish, consume, dead-letter."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding
from kombu.exceptions import OperationalError
from kombu.message import Message
from kombu.messaging import Consumer, Producer
from kombu.transport import memory

from bus_tasks import names
from bus_tasks.config import redact_url
from bus_tasks.errors import PublishError

log = logging.getLogger(__name__)

EVENTS_EXCHANGE = Exchange(names.EVENTS_EXCHANGE, type="topic", durable=True)
CONTROL_EXCHANGE = Exchange(names.CONTROL_EXCHANGE, type="direct", durable=True)
DEFAULT_EXCHANGE = Exchange("", type="direct")
_EXCHANGES = {e.name: e for e in (EVENTS_EXCHANGE, CONTROL_EXCHANGE)}


def events_queue() -> Queue:
    return Queue(names.EVENTS_QUEUE, EVENTS_EXCHANGE, routing_key=names.EVENTS_BINDING, durable=True)


def rpc_queue() -> Queue:
    return Queue(names.RPC_QUEUE, DEFAULT_EXCHANGE, routing_key=names.RPC_QUEUE, durable=True)


def dead_queue() -> Queue:
    return Queue(names.DEAD_QUEUE, DEFAULT_EXCHANGE, routing_key=names.DEAD_QUEUE, durable=True)


def control_queue(subsystem: str) -> Queue:
    """A subsystem's durable command queue: its own commands, and those addressed to all."""
    return Queue(
        names.control_queue(subsystem),
        durable=True,
        bindings=[
            binding(CONTROL_EXCHANGE, routing_key=subsystem),
            binding(CONTROL_EXCHANGE, routing_key=names.CONTROL_BROADCAST),
        ],
    )


def reply_queue(prefix: str) -> Queue:
    """A private, self-deleting queue for the replies of one client."""
    name = f"{prefix}{uuid.uuid4().hex}"
    return Queue(
        name,
        DEFAULT_EXCHANGE,
        routing_key=name,
        durable=False,
        exclusive=True,
        auto_delete=True,
    )


@dataclass(slots=True)
class Delivery:
    """One received message, with kombu kept out of sight."""

    body: bytes
    routing_key: str
    headers: dict[str, Any]
    reply_to: str | None
    correlation_id: str | None
    expiration_ms: int | None
    _message: Message = field(repr=False)
    _stale: Callable[[], bool] = field(repr=False, default=lambda: False)

    @classmethod
    def of(cls, message: Message, stale: Callable[[], bool] | None = None) -> Delivery:
        props = message.properties
        expiration = props.get("expiration")
        body = message.body
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogateescape")
        return cls(
            body=body,
            routing_key=message.delivery_info.get("routing_key", ""),
            headers=dict(message.headers or {}),
            reply_to=props.get("reply_to"),
            correlation_id=props.get("correlation_id"),
            expiration_ms=int(expiration) if expiration not in (None, "") else None,
            _message=message,
            _stale=stale or (lambda: False),
        )

    # A delivery of a connection that has since been replaced will come again on the new one:
    # settling it would only fail on the closed channel, so these do nothing then.

    def ack(self, *, multiple: bool = False) -> None:
        if not self._stale():
            self._message.ack(multiple=multiple)

    def deadline(self) -> float | None:
        """Epoch seconds after which the sender no longer waits, if it said."""
        sent_at = self.headers.get(names.HEADER_SENT_AT)
        if self.expiration_ms is None or not isinstance(sent_at, int | float):
            return None
        return float(sent_at) + self.expiration_ms / 1000.0


Handler = Callable[[Delivery], None]


def transport_options(url: str, *, redis_key_prefix: str = "") -> dict[str, Any]:
    scheme = url.split("://", 1)[0]
    if scheme == "memory":
        return {"polling_interval": 0.002}
    if scheme in ("redis", "rediss"):
        options: dict[str, Any] = {"polling_interval": 0.05}
        if redis_key_prefix:
            options["global_keyprefix"] = redis_key_prefix
        return options
    return {}


class ShutdownRequested(Exception):
    """Raised while waiting for the broker once the connection's ``stop`` event is set."""


@dataclass(slots=True)
class _Outgoing:
    """A message on its way: kept until the broker confirms it, re-sent after a reconnect."""

    body: bytes
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    reply_to: str | None
    correlation_id: str | None
    expiration_s: float | None
    persistent: bool
    on_confirm: Callable[[], None] | None


class BusConnection:
    """One broker connection with its consumers; survives a dropped connection by reconnecting.

    With ``confirm_publish`` on RabbitMQ, publishes are pipelined: each message is kept until
    the broker confirms it (at most ``max_unconfirmed``) and re-sent after a reconnect or a nack.
    Not thread-safe: use one per thread.
    """

    def __init__(
        self,
        url: str,
        *,
        confirm_publish: bool = False,
        heartbeat_s: float = 0.0,
        connect_timeout_s: float = 5.0,
        connect_retries: int | None = None,
        redis_key_prefix: str = "",
        reconnect_max_s: float = 5.0,
        max_unconfirmed: int = 10_000,
        confirm_window: int = 1_000,
        stop: threading.Event | None = None,
    ) -> None:
        self.url = url
        self.is_amqp = url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")
        self._conn = Connection(
            url,
            heartbeat=heartbeat_s if self.is_amqp else 0,
            connect_timeout=connect_timeout_s,
            transport_options=transport_options(url, redis_key_prefix=redis_key_prefix),
        )
        self._connect_retries = connect_retries
        self._connect_timeout_s = connect_timeout_s
        self._stop = stop  # once set, waiting for the broker gives up with ShutdownRequested
        self._reconnect_max_s = reconnect_max_s
        self._consumers: list[tuple[list[Queue], Handler, bool, int | None]] = []
        # py-amqp reads incoming frames while it publishes, so a handler that publishes (a reply,
        # a dead letter) would be re-entered by the next delivery: deliveries queue here instead.
        self._inbox: deque[tuple[Handler, Message]] = deque()
        self._dispatching = False
        self._generation = 0  # bumped by every reconnect attempt: older deliveries are stale
        self._dead_letters_unconfirmed = 0
        self._live: list[Consumer] = []
        self._producer: Producer | None = None
        self._declared: list[Queue | Exchange] = []
        self._exchanges_declared: set[str] = set()
        self._last_heartbeat = 0.0
        # Publisher confirms (RabbitMQ only): delivery tag -> message, in publish order.
        self._confirming = confirm_publish and self.is_amqp
        self._max_unconfirmed = max_unconfirmed
        self._confirm_window = min(confirm_window, max_unconfirmed)
        self._unconfirmed: dict[int, _Outgoing] = {}
        self._unsent: deque[_Outgoing] = deque()
        self._next_tag = 1
        self._broken = False
        self._deadline: float | None = None  # see bounded()

    def __repr__(self) -> str:
        return f"BusConnection({redact_url(self.url)!r})"

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection or channel was lost."""
        return (
            *self._conn.connection_errors,
            *self._conn.channel_errors,
            OperationalError,  # kombu's wrapper when reconnecting gave up
        )

    @property
    def pending(self) -> int:
        """Messages published but not yet confirmed by the broker."""
        return len(self._unconfirmed) + len(self._unsent)

    @contextmanager
    def bounded(self, deadline: float) -> Iterator[None]:
        """Within the block, waiting for the broker gives up at ``deadline`` (``time.monotonic()``).

        Connecting and reconnecting (also those that publishing, declaring or draining start)
        then raise one of :attr:`errors` at the deadline instead of retrying on.
        """
        outer = self._deadline
        self._deadline = deadline if outer is None else min(outer, deadline)
        try:
            yield
        finally:
            self._deadline = outer

    def _remaining(self) -> float | None:
        """Seconds left before the deadline of :meth:`bounded` (at least one attempt's worth)."""
        if self._deadline is None:
            return None
        return max(self._deadline - time.monotonic(), 0.001)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def connect(self, max_retries: int | Literal["default"] | None = "default") -> None:
        """Connect now, retrying with back-off (forever unless ``connect_retries`` was given, or
        until the deadline of :meth:`bounded`)."""
        remaining = self._remaining()
        # One attempt must not outlast the deadline either (a host that drops SYNs).
        attempt_s = self._connect_timeout_s if remaining is None else min(self._connect_timeout_s, remaining)
        self._conn.connect_timeout = attempt_s  # type: ignore[assignment]  # typed int, takes seconds
        self._conn.ensure_connection(
            errback=self._on_connect_error,
            max_retries=self._connect_retries if max_retries == "default" else max_retries,
            interval_start=0.1,
            interval_step=0.5,
            interval_max=self._reconnect_max_s,
            timeout=remaining,
        )

    def _check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise ShutdownRequested(f"stopped while waiting for {redact_url(self.url)}")

    def _on_connect_error(self, exc: BaseException, interval: float) -> None:
        self._check_stop()
        if self._deadline is not None and time.monotonic() + interval >= self._deadline:
            raise exc  # the next attempt would come after the deadline of bounded()
        log.warning("broker %s unreachable (%s); retrying in %.1fs", redact_url(self.url), exc, interval)

    def declare(self, *entities: Queue | Exchange) -> None:
        """Declare exchanges and queues (with their bindings); re-declared after a reconnect."""
        self.connect()
        channel = self._conn.default_channel
        for entity in entities:
            # bind() makes a bound copy: the module-level entities stay unbound and shareable.
            entity.bind(channel).declare()
            if entity not in self._declared:
                self._declared.append(entity)

    def declare_topology(self) -> None:
        """The aggregator's side of the bus: events in, RPC in, control out, dead letters."""
        self.declare(EVENTS_EXCHANGE, CONTROL_EXCHANGE, events_queue(), rpc_queue(), dead_queue())

    def consume(
        self,
        queues: list[Queue],
        handler: Handler,
        *,
        no_ack: bool = False,
        prefetch: int | None = None,
    ) -> None:
        """Deliver messages of ``queues`` to ``handler`` during :meth:`drain`."""
        self._consumers.append((queues, handler, no_ack, prefetch))
        self.connect()
        self._start(queues, handler, no_ack, prefetch)

    def _dispatch(self, handler: Handler, message: Message) -> None:
        """Run handlers one delivery at a time, in arrival order, never nested."""
        self._inbox.append((handler, message))
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._inbox:
                next_handler, next_message = self._inbox.popleft()
                next_handler(Delivery.of(next_message, self._staleness()))
        finally:
            self._dispatching = False

    def _staleness(self) -> Callable[[], bool]:
        """A test of whether the connection current now has since been replaced."""
        generation = self._generation
        return lambda: generation != self._generation

    def _start(self, queues: list[Queue], handler: Handler, no_ack: bool, prefetch: int | None) -> None:
        channel = self._conn.channel()
        if self.is_amqp:
            # py-amqp would decode each UTF-8 body to str, and Delivery would encode it back: two
            # passes over a 40 MB listing for nothing. The JSON decoders check UTF-8 themselves.
            channel.auto_decode = False
        consumer = Consumer(
            channel,
            queues=queues,
            on_message=lambda message: self._dispatch(handler, message),
            no_ack=no_ack,
            prefetch_count=prefetch,
        )
        consumer.consume()
        self._live.append(consumer)

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
        runs when the broker confirms it, and :meth:`flush` waits for every confirm.

        Raises:
            PublishError: when ``max_unconfirmed`` messages already wait for the broker.
        """
        message = _Outgoing(
            body,
            exchange,
            routing_key,
            headers or {},
            reply_to,
            correlation_id,
            expiration_s,
            persistent,
            on_confirm,
        )
        if not self._confirming:
            if self._broken:
                # Restore consumers first: a request sent before its reply queue is back
                # would be answered to nowhere.
                self.recover()
            self._send(message)
            if on_confirm is not None:
                on_confirm()
            return
        if self.pending >= self._max_unconfirmed:
            self._await_confirms(self._max_unconfirmed - 1, deadline=time.monotonic() + 1.0)
            if self.pending >= self._max_unconfirmed:
                raise PublishError(
                    f"{self.pending} messages wait for confirmation by {redact_url(self.url)}"
                    f" (the bound is {self._max_unconfirmed}): is the broker reachable?"
                )
        self._unsent.append(message)
        self._pump()
        if not self._broken and len(self._unconfirmed) >= self._confirm_window:
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
        """Process confirms (reconnecting and re-sending as needed) until ``pending <= at_most``."""
        while self.pending > at_most:
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                if self._broken:
                    self.recover(max_retries=1)
                self._conn.drain_events(timeout=0.1)
            except TimeoutError:
                continue
            except self.errors:
                self._lost()

    def _pump(self) -> None:
        """Send what is waiting, in order; on a lost connection keep it for after a reconnect."""
        try:
            if self._broken:
                self.recover(max_retries=1)  # publishing must not hang while the broker is away
            while self._unsent:
                message = self._unsent[0]
                self._send(message)
                self._unconfirmed[self._next_tag] = message
                self._next_tag += 1
                self._unsent.popleft()
        except self.errors:
            self._lost()

    def _lost(self) -> None:
        log.warning("broker connection to %s lost with %d unconfirmed", redact_url(self.url), self.pending)
        # Confirm callbacks belong to the old connection (e.g. acks of its deliveries): drop them.
        resend = [*self._unconfirmed.values(), *self._unsent]
        for message in resend:
            message.on_confirm = None
        self._unsent = deque(resend)
        self._unconfirmed.clear()
        self._broken = True

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        for tag in self._confirmed_tags(delivery_tag, multiple):
            message = self._unconfirmed.pop(tag)
            if message.on_confirm is not None:
                message.on_confirm()

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        tags = self._confirmed_tags(delivery_tag, multiple)
        log.warning("broker refused %d messages; re-sending them", len(tags))
        self._unsent.extendleft(reversed([self._unconfirmed.pop(tag) for tag in tags]))

    def _confirmed_tags(self, delivery_tag: int, multiple: bool) -> list[int]:
        if not multiple:
            return [delivery_tag] if delivery_tag in self._unconfirmed else []
        return [tag for tag in self._unconfirmed if tag <= delivery_tag]

    def _send(self, message: _Outgoing) -> None:
        if self._producer is None:
            self.connect()
            channel: Any = self._conn.default_channel  # py-amqp's channel: confirms are its extension
            if self._confirming:
                channel.confirm_select()
                channel.events["basic_ack"].add(self._on_ack)
                channel.events["basic_nack"].add(self._on_nack)
                self._next_tag = 1
            self._producer = Producer(channel)
        if message.exchange and message.exchange not in self._exchanges_declared:
            # Virtual transports (redis, memory) route by the exchange type this connection knows.
            self.declare(_EXCHANGES[message.exchange])
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

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a poison message to ``bus_tasks.dead`` with ``reason`` in a header.

        The original is acked only once the dead letter is safely with the broker.
        """
        headers = {
            names.HEADER_REASON: reason[:1000],
            "x-original-routing-key": delivery.routing_key,
        }
        self._dead_letters_unconfirmed += 1

        def confirmed() -> None:
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

    # -- consuming ------------------------------------------------------------------------

    def drain(self, timeout_s: float) -> bool:
        """Process messages for up to ``timeout_s``; False when none arrived.

        Raises:
            the transport's connection errors (see :attr:`errors`); call :meth:`recover`.
        """
        if self._broken:
            self.recover()
        if self.is_amqp:
            now = time.monotonic()
            if now - self._last_heartbeat >= 1.0:
                self._conn.heartbeat_check()
                self._last_heartbeat = now
        try:
            self._conn.drain_events(timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def recover(self, max_retries: int | Literal["default"] | None = "default") -> None:
        """Reconnect after a lost connection: re-declare, restart consumers, re-send unconfirmed.

        Without a bound on retries, keeps trying (with back-off) until everything is restored,
        even if the connection drops again half-way, or until the deadline of :meth:`bounded`.

        Raises:
            one of :attr:`errors` when the broker is still unreachable after ``max_retries`` or
            at the deadline.
        """
        retries = self._connect_retries if max_retries == "default" else max_retries
        delay_s = 0.1
        while True:
            try:
                self._reconnect(max_retries)
                return
            except self.errors as exc:
                if retries is not None or self._past_deadline():
                    raise
                log.warning(
                    "reconnecting to %s failed (%s); again in %.1fs", redact_url(self.url), exc, delay_s
                )
                self._check_stop()
                pause_s = min(delay_s, self._remaining() or delay_s)
                if self._stop is not None:
                    self._stop.wait(pause_s)  # back-off between attempts, cut short by a stop
                else:
                    time.sleep(pause_s)  # back-off between attempts
                delay_s = min(delay_s * 2, self._reconnect_max_s)

    def _reconnect(self, max_retries: int | Literal["default"] | None) -> None:
        log.warning("reconnecting to %s", redact_url(self.url))
        if not self._broken:
            self._lost()
        self._live.clear()
        self._generation += 1
        self._inbox.clear()  # deliveries of the lost connection come again on the new one
        self._dead_letters_unconfirmed = 0
        self._producer = None
        self._exchanges_declared.clear()
        try:
            self._conn.collect()
        except Exception:  # the old connection is gone either way
            log.debug("collecting the old connection failed", exc_info=True)
        self._conn = self._conn.clone()
        self.connect(max_retries)
        channel = self._conn.default_channel
        for entity in self._declared:
            entity.bind(channel).declare()
        for queues, handler, no_ack, prefetch in self._consumers:
            self._start(queues, handler, no_ack, prefetch)
        self._broken = False
        log.info("broker connection to %s re-established; re-sending %d", redact_url(self.url), self.pending)
        self._pump()

    # -- tools ----------------------------------------------------------------------------

    def consumer_count(self, queue: Queue) -> int | None:
        """Consumers attached to ``queue`` on RabbitMQ (declares it if missing); None elsewhere."""
        if not self.is_amqp:
            return None  # the virtual transports do not count consumers
        self.connect()
        _, _, consumers = queue.bind(self._conn.default_channel).queue_declare(passive=False)
        return int(consumers)

    def queue_size(self, queue: Queue) -> int:
        """Messages ready in ``queue`` (declares it if missing)."""
        self.connect()
        bound = queue.bind(self._conn.default_channel)
        _, count, _ = bound.queue_declare(passive=False)
        return int(count)

    def get(self, queue: Queue) -> Delivery | None:
        """Fetch one message from ``queue`` without consuming (for tools and tests)."""
        self.connect()
        message = queue.bind(self._conn.default_channel).get(no_ack=False)
        return None if message is None else Delivery.of(message)

    def delete_queues(self, queue_names: list[str]) -> None:
        """Delete queues by name (tools and test teardown)."""
        self.connect()
        channel = self._conn.default_channel
        for name in queue_names:
            channel.queue_delete(name)

    def close(self, flush_timeout_s: float = 10.0) -> None:
        """Cancel consumers, wait (bounded) for outstanding confirms, then disconnect."""
        try:
            for consumer in self._live:
                try:
                    consumer.cancel()
                except Exception:
                    log.debug("cancelling a consumer failed", exc_info=True)
            self._live.clear()
            self._consumers.clear()
            self._inbox.clear()
            if self.pending:
                self.flush(flush_timeout_s)
        except (PublishError, ShutdownRequested, *self.errors) as exc:  # type: ignore[misc]
            log.warning("closing %r: %s", self, exc)
        finally:
            self._conn.release()

    def __enter__(self) -> BusConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reset_memory_transport() -> None:
    """Forget every queue, exchange and binding of kombu's in-process ``memory://`` broker.

    kombu keeps that broker's state in class attributes; tests call this between runs.
    """
    memory.Channel.queues.clear()
    memory.Channel.events.clear()
    memory.Transport.global_state.clear()
