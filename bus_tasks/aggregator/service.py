"""The aggregator: consumes events into the view, answers JSON-RPC, relays control commands."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from bus_tasks import codec, names
from bus_tasks.aggregator import methods as rpc
from bus_tasks.core.model import decode_event
from bus_tasks.core.view import Outcome, TaskView, Tombstone
from bus_tasks.errors import BusTasksError, EventRejected, GeneralError, InvalidRequest, StoreUnavailable
from bus_tasks.store import NullStore, Store
from bus_tasks.transport import Bus, Delivery, ShutdownRequested

log = logging.getLogger(__name__)

_COUNTED = {outcome: f"events_{outcome.value}" for outcome in Outcome}  # the key in ``counts``

DEFAULT_CONTROL_TIMEOUT_S = 10.0
# A resync request older than this is moot: the subsystem announces itself when it starts.
RESYNC_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class AggregatorPolicy:
    """Limits and timings of one aggregator."""

    prefetch_count: int = 256
    ack_batch: int = 128
    max_event_bytes: int = 1 << 20
    max_request_bytes: int = 1 << 20
    done_ttl_s: float | None = 7 * 24 * 3600.0
    tombstone_ttl_s: float = 30 * 24 * 3600.0
    expire_every_s: float = 60.0


class StoreHealth:
    """Whether the store takes writes, and when to try again after it failed (with back-off).

    Logs one warning when the store starts failing and one when it is back, not one per try.
    """

    def __init__(self, store: Store, *, first_retry_s: float = 0.1, max_retry_s: float = 5.0) -> None:
        self.store = store
        self.failing: StoreUnavailable | None = None
        self.failures = 0
        self._first_retry_s = first_retry_s
        self._max_retry_s = max_retry_s
        self._delay_s = first_retry_s
        self._retry_at = 0.0

    def due(self) -> bool:
        """True when a write may be tried now: the store is fine, or its back-off has passed."""
        return self.failing is None or time.monotonic() >= self._retry_at

    def wait_s(self) -> float:
        """Seconds until the next try (0 when the store is fine)."""
        return 0.0 if self.failing is None else max(self._retry_at - time.monotonic(), 0.0)

    def failed(self, exc: StoreUnavailable, *, held: int) -> None:
        self.failures += 1
        if self.failing is None:
            log.warning("%s; ingest paused with %d events not stored (none acked), retrying", exc, held)
        else:
            log.debug("store still failing: %s", exc)
            self._delay_s = min(self._delay_s * 2, self._max_retry_s)
        self.failing = exc
        self._retry_at = time.monotonic() + self._delay_s

    def succeeded(self) -> None:
        if self.failing is not None:
            log.warning("store %s is back after %d failed tries: ingest resumed", self.store, self.failures)
            self.failing = None
            self.failures = 0
            self._delay_s = self._first_retry_s


@dataclass(slots=True)
class _PendingControl:
    """An RPC waiting for the owning subsystem to answer a forwarded command."""

    request_id: rpc.RequestId
    reply_to: str
    correlation_id: str | None
    deadline: float
    method: str
    task_id: str


class Aggregator:
    """Keeps the merged view of every task and serves it over the request/reply queue."""

    def __init__(
        self,
        connection: Bus,
        *,
        view: TaskView | None = None,
        store: Store | None = None,
        policy: AggregatorPolicy | None = None,
    ) -> None:
        self.connection = connection
        self.view = view if view is not None else TaskView()
        self.store = store if store is not None else NullStore()
        self.policy = policy or AggregatorPolicy()
        self.dispatcher = rpc.Dispatcher(
            self.view, on_clear=self._on_clear, check_writable=self._check_writable
        )
        self.health = StoreHealth(self.store)
        self.counts: Counter[str] = Counter()
        self.ready = threading.Event()
        self._unacked: list[Delivery] = []
        self._pending: dict[str, _PendingControl] = {}
        self._control_replies = ""  # its name, once declared
        self._declared_control: set[str] = set()
        self._next_expiry = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> bool:
        """Load the store, bind the event queue, then start serving RPC; logs one ready line.

        Returns False when ``stop`` was set before it was ready (then nothing is consumed).

        Raises:
            StoreUnusable: when the store can never be loaded as it is.
        """
        stop = stop if stop is not None else threading.Event()
        log.info("loading the view from %s", self.store)
        loaded = self._load(stop)
        if loaded is None:
            return False
        log.info("loaded %d tasks and %d tombstones from %s", loaded, len(self.view.tombstones), self.store)
        if stop.is_set():
            return False
        self.connection.declare_topology()
        others = self.connection.consumer_count(names.EVENTS_QUEUE)
        if others:
            # Competing consumers: each would get part of the events and answer from part of the view.
            log.warning(
                "another aggregator (%d consumer(s)) already reads %s on %r: run one per broker,"
                " or both views will miss events",
                others,
                names.EVENTS_QUEUE,
                self.connection,
            )
        self._control_replies = self.connection.declare_reply_queue(names.CONTROL_REPLY_PREFIX)
        # Events first: an event published once RPC answers must already have a queue.
        self.connection.consume(names.EVENTS_QUEUE, self._on_event, prefetch=self.policy.prefetch_count)
        self.connection.consume(self._control_replies, self._on_control_reply, no_ack=True)
        self.connection.consume(names.RPC_QUEUE, self._on_request, prefetch=64)
        self.request_resync()
        log.info("aggregator ready on %r: %d tasks loaded from %s", self.connection, loaded, self.store)
        self.ready.set()
        return True

    def _load(self, stop: threading.Event) -> int | None:
        """Load the store, retrying with back-off while it is unavailable; None if stopped first."""
        health = StoreHealth(self.store, first_retry_s=0.5)
        while True:
            try:
                loaded = self.store.load(self.view)
            except StoreUnavailable as exc:
                health.failed(exc, held=0)
                if stop.wait(health.wait_s()):
                    return None
                continue
            health.succeeded()
            return loaded

    def request_resync(self) -> None:
        """Ask every listening subsystem to re-announce its live tasks, so the view heals."""
        body = codec.dumps({"jsonrpc": "2.0", "method": "resync", "params": {}})
        self.connection.publish(
            body,
            exchange=names.CONTROL_EXCHANGE,
            routing_key=names.CONTROL_BROADCAST,
            expiration_s=RESYNC_TTL_S,
        )

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; reconnects when the broker connection drops.

        Raises:
            StoreUnusable: when the store can never be loaded as it is.
        """
        try:
            if self.start(stop):
                while not stop.is_set():
                    self.step()
        except ShutdownRequested as exc:
            log.warning("%s", exc)  # the broker was away when the stop came: leave anyway
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Store and ack what can be, then close; never raises for a broker or store that is away."""
        try:
            self._flush(force=True)
        except (ShutdownRequested, *self.connection.errors) as exc:  # type: ignore[misc]
            log.warning("stopping without acking %d events (they come again): %s", len(self._unacked), exc)
        finally:
            if self.health.failing is not None:
                log.warning(
                    "stopping with the store unavailable: %d events not stored, none acked",
                    len(self._unacked),
                )
            self._unacked.clear()
            self.store.close()
            self.connection.close()
        log.info("aggregator stopped: %s", dict(self.counts))

    def step(self, timeout_s: float = 0.2) -> None:
        """Process what arrives within ``timeout_s``; flush acks when the queue is idle."""
        try:
            if not self._unacked:
                wait_s = timeout_s
            elif self.health.failing is None:
                wait_s = 0.005  # a short look for more before acking what waits
            else:
                wait_s = min(max(self.health.wait_s(), 0.005), timeout_s)  # until the next try
            got = self.connection.drain(wait_s)
            if not got or not self.health.due():
                self._flush()
            self._tick()
        except self.connection.errors:
            self._unacked.clear()  # unacked deliveries come back after a reconnect
            self.connection.recover()

    # -- events -------------------------------------------------------------------------

    def _on_event(self, delivery: Delivery) -> None:
        try:
            event = decode_event(delivery.body, max_bytes=self.policy.max_event_bytes)
            outcome = self.view.apply(event)
        except EventRejected as exc:
            self._dead_letter(delivery, exc.reason)
            return
        self.counts[_COUNTED[outcome]] += 1
        if outcome is Outcome.APPLIED:
            self.store.put(self.view.get(event.task.id))
        elif outcome is Outcome.CLEARED:
            self.store.bury(event.task.id, self.view.tombstones[event.task.id])
        if log.isEnabledFor(logging.DEBUG):  # the hot path: not even the arguments otherwise
            log.debug("event %s task=%s seq=%d %s", event.event, event.task.id, event.seq, outcome.value)
        self._unacked.append(delivery)
        if len(self._unacked) >= self.policy.ack_batch and self.health.due():
            self._flush()

    def _flush(self, *, force: bool = False) -> bool:
        """Make applied events durable, then ack them; False while the store is failing.

        While it fails, a commit is tried again only once its back-off has passed (or ``force``);
        the events stay unacked, and the broker stops delivering at ``prefetch_count``.
        """
        if not self._unacked:
            return True
        if not (force or self.health.due()):
            return False
        try:
            self.store.commit()
        except StoreUnavailable as exc:
            self.health.failed(exc, held=len(self._unacked))
            return False
        self.health.succeeded()
        self.connection.ack_all(self._unacked)
        self._unacked.clear()
        return True

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.counts["events_dead"] += 1
        log.warning("event rejected key=%r: %r", delivery.routing_key, reason)
        self._flush()  # keep acks in delivery order
        self.connection.dead_letter(delivery, reason)

    # -- requests -----------------------------------------------------------------------

    def _on_request(self, delivery: Delivery) -> None:
        received = time.time()
        received_mono = time.monotonic()  # the forward deadline counts from here
        deadline = delivery.deadline()
        if deadline is not None and deadline <= received:
            self.counts["requests_expired"] += 1
            log.info("rpc request %r dropped: its caller gave up", delivery.correlation_id)
            delivery.ack()
            return
        if len(delivery.body) > self.policy.max_request_bytes:
            error = InvalidRequest(f"request of {len(delivery.body)} bytes is too large")
            reply = rpc.Reply(None, rpc.error_body(None, error))
        else:
            self._flush()  # answer from a view whose events are durable
            reply = self.dispatcher.handle(delivery.body)
        self.counts["requests"] += 1
        if reply.forward is not None and delivery.reply_to:
            self._forward(delivery, reply, received, received_mono)
        elif reply.body is not None and delivery.reply_to:
            self._reply(delivery.reply_to, delivery.correlation_id, reply.body)
        delivery.ack()

    def _reply(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        self.connection.publish(body, routing_key=reply_to, correlation_id=correlation_id, persistent=False)

    # -- control ------------------------------------------------------------------------

    def _forward(self, delivery: Delivery, reply: rpc.Reply, received: float, received_mono: float) -> None:
        forward = reply.forward
        assert forward is not None
        assert delivery.reply_to is not None
        timeout_s = (
            delivery.expiration_ms / 1000.0
            if delivery.expiration_ms is not None
            else DEFAULT_CONTROL_TIMEOUT_S
        )
        # Answer 100 a little before the caller's own deadline, so it hears why.
        margin_s = min(0.25, timeout_s * 0.1)
        deadline = received_mono + timeout_s - margin_s
        control_id = uuid.uuid4().hex
        self._pending[control_id] = _PendingControl(
            request_id=reply.request_id,
            reply_to=delivery.reply_to,
            correlation_id=delivery.correlation_id,
            deadline=deadline,
            method=reply.method,
            task_id=forward.task_id,
        )
        self._ensure_control_queue(forward.subsystem)
        body = rpc.request_body(control_id, forward.command, {"taskID": forward.task_id})
        self.connection.publish(
            body,
            exchange=names.CONTROL_EXCHANGE,
            routing_key=forward.subsystem,
            reply_to=self._control_replies,
            correlation_id=control_id,
            expiration_s=max(timeout_s - margin_s, 0.001),
            headers={names.HEADER_SENT_AT: received},
            persistent=False,
        )
        self.counts[f"control_{forward.command}"] += 1
        log.info("rpc %s task=%s forwarded to %s", reply.method, forward.task_id, forward.subsystem)

    def _on_control_reply(self, delivery: Delivery) -> None:
        pending = self._pending.pop(delivery.correlation_id or "", None)
        if pending is None:
            log.info("late control reply %r dropped", delivery.correlation_id)
            return
        try:
            answer = codec.loads(delivery.body)
            error = answer.get("error")
            if error is not None:
                body = codec.dumps({"jsonrpc": "2.0", "id": pending.request_id, "error": error})
            else:
                body = rpc.result_body(pending.request_id, answer["result"])
        except (codec.DecodeError, AttributeError, KeyError, TypeError):
            log.warning("malformed control reply for task %s", pending.task_id)
            failure = GeneralError(pending.task_id, "malformed reply from the owning subsystem")
            body = rpc.error_body(pending.request_id, failure)
        self._reply(pending.reply_to, pending.correlation_id, body)

    def _tick(self) -> None:
        now = time.monotonic()
        for control_id in [c for c, p in self._pending.items() if p.deadline <= now]:
            pending = self._pending.pop(control_id)
            error: BusTasksError = GeneralError(
                pending.task_id, f"the owning subsystem did not answer {pending.method} in time"
            )
            self.counts["control_timeouts"] += 1
            log.warning("rpc %s task=%s: subsystem did not answer", pending.method, pending.task_id)
            self._reply(pending.reply_to, pending.correlation_id, rpc.error_body(pending.request_id, error))
        if now >= self._next_expiry and self.health.failing is None:
            self._next_expiry = now + self.policy.expire_every_s
            self._expire()

    def _expire(self) -> None:
        expired = self.view.expire(
            tombstone_ttl_s=self.policy.tombstone_ttl_s, done_ttl_s=self.policy.done_ttl_s
        )
        for task_id in expired.buried:
            tombstone = self.view.tombstones[task_id]
            self.store.bury(task_id, tombstone)
            # Its subsystem drops its copy too, so no later resync can bring the task back.
            self._tell_cleared(task_id, tombstone.subsystem)
        for task_id in expired.forgotten:
            self.store.forget(task_id)
        if expired.buried or expired.forgotten:
            try:
                self.store.commit()
            except StoreUnavailable as exc:
                self.health.failed(exc, held=len(self._unacked))  # stays buffered: written later
            log.info(
                "expired %d done tasks and %d tombstones",
                len(expired.buried),
                len(expired.forgotten),
            )

    def _check_writable(self) -> None:
        """Refuse a clear while the store fails: it would be forgotten by a restart."""
        if self.health.failing is not None:
            raise GeneralError(
                message=f"General Exception: the view cannot be changed now: {self.health.failing}"
            )

    def _on_clear(self, task_id: str, tombstone: Tombstone) -> None:
        """A done task was cleared through RPC: persist it and tell its subsystem."""
        self.store.bury(task_id, tombstone)
        try:
            self.store.commit()
        except StoreUnavailable as exc:
            # The tombstone stays buffered and is written with the next commit that succeeds.
            self.health.failed(exc, held=len(self._unacked))
        self._tell_cleared(task_id, tombstone.subsystem)
        self.counts["cleared"] += 1

    def _tell_cleared(self, task_id: str, subsystem: str) -> None:
        self._ensure_control_queue(subsystem)
        body = codec.dumps({"jsonrpc": "2.0", "method": "clear", "params": {"taskID": task_id}})
        self.connection.publish(body, exchange=names.CONTROL_EXCHANGE, routing_key=subsystem)

    def _ensure_control_queue(self, subsystem: str) -> None:
        # The queue is durable: a subsystem that is offline gets the message when it is back.
        if subsystem not in self._declared_control:
            self.connection.declare_control_queue(subsystem)
            self._declared_control.add(subsystem)
