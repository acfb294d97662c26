"""The only module that imports kombu: connections, topology, publish, consume, dead-letter."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer
from kombu.transport import memory

from bus_tasks import names
from bus_tasks.config import redact_url

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
    return Queue(names.control_queue(subsystem), CONTROL_EXCHANGE, routing_key=subsystem, durable=True)


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

    @classmethod
    def of(cls, message: Message) -> Delivery:
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
        )

    def ack(self) -> None:
        self._message.ack()

    def reject(self) -> None:
        self._message.reject(requeue=False)

    def requeue(self) -> None:
        self._message.requeue()

    def deadline(self, now: float | None = None) -> float | None:
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


class BusConnection:
    """One broker connection with its consumers; survives a dropped connection by reconnecting.

    Not thread-safe: use one per thread.
    """

    def __init__(
        self,
        url: str,
        *,
        confirm_publish: bool = False,
        heartbeat_s: float = 0.0,
        connect_timeout_s: float = 5.0,
        redis_key_prefix: str = "",
        reconnect_max_s: float = 5.0,
    ) -> None:
        self.url = url
        self.is_amqp = url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")
        options = transport_options(url, redis_key_prefix=redis_key_prefix)
        if confirm_publish and self.is_amqp:
            options["confirm_publish"] = True
        self._conn = Connection(
            url,
            heartbeat=heartbeat_s if self.is_amqp else 0,
            connect_timeout=connect_timeout_s,
            transport_options=options,
        )
        self._reconnect_max_s = reconnect_max_s
        self._consumers: list[tuple[list[Queue], Handler, bool, int | None]] = []
        self._live: list[Consumer] = []
        self._producer: Producer | None = None
        self._declared: list[Queue | Exchange] = []
        self._last_heartbeat = 0.0
        self._exchanges_declared: set[str] = set()

    def __repr__(self) -> str:
        return f"BusConnection({redact_url(self.url)!r})"

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection or channel was lost."""
        return tuple(self._conn.connection_errors) + tuple(self._conn.channel_errors)

    def connect(self) -> None:
        """Connect now, retrying with back-off until connected."""
        self._conn.ensure_connection(
            errback=self._on_connect_error,
            max_retries=None,
            interval_start=0.1,
            interval_step=0.5,
            interval_max=self._reconnect_max_s,
        )

    def _on_connect_error(self, exc: BaseException, interval: float) -> None:
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

    def _start(self, queues: list[Queue], handler: Handler, no_ack: bool, prefetch: int | None) -> None:
        channel = self._conn.channel()
        consumer = Consumer(
            channel,
            queues=queues,
            on_message=lambda message: handler(Delivery.of(message)),
            no_ack=no_ack,
            prefetch_count=prefetch,
        )
        consumer.consume()
        self._live.append(consumer)

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
    ) -> None:
        """Publish one JSON body; with confirms on, returns once the broker has it."""
        if self._producer is None:
            self.connect()
            self._producer = Producer(self._conn.default_channel)
        if exchange and exchange not in self._exchanges_declared:
            # Virtual transports (redis, memory) route by the exchange type this connection knows.
            self.declare(_EXCHANGES[exchange])
            self._exchanges_declared.add(exchange)
        self._producer.publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            content_type=names.CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2 if persistent else 1,
            headers=headers or {},
            reply_to=reply_to,
            correlation_id=correlation_id,
            expiration=expiration_s,
            retry=False,
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a poison message to ``bus_tasks.dead`` with ``reason`` in a header, then ack it."""
        headers = {
            names.HEADER_REASON: reason[:1000],
            "x-original-routing-key": delivery.routing_key,
        }
        self.publish(delivery.body, routing_key=names.DEAD_QUEUE, headers=headers)
        delivery.ack()

    def drain(self, timeout_s: float) -> bool:
        """Process messages for up to ``timeout_s``; False when none arrived.

        Raises:
            the transport's connection errors (see :attr:`errors`); call :meth:`recover`.
        """
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

    def recover(self) -> None:
        """Reconnect after a lost connection; re-declare the topology and restart consumers."""
        log.warning("broker connection to %s lost; reconnecting", redact_url(self.url))
        self._live.clear()
        self._producer = None
        try:
            self._conn.collect()
        except Exception:  # the old connection is gone either way
            log.debug("collecting the old connection failed", exc_info=True)
        self._conn = self._conn.clone()
        self.connect()
        channel = self._conn.default_channel
        for entity in self._declared:
            entity.bind(channel).declare()
        for queues, handler, no_ack, prefetch in self._consumers:
            self._start(queues, handler, no_ack, prefetch)
        log.info("broker connection to %s re-established", redact_url(self.url))

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

    def close(self) -> None:
        for consumer in self._live:
            try:
                consumer.cancel()
            except Exception:
                log.debug("cancelling a consumer failed", exc_info=True)
        self._live.clear()
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
