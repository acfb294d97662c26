"""The front door's one broker connection, owned by its asyncio loop: publish at once, drain when readable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from bus_tasks import names
from bus_tasks.frontdoors.inflight import InFlight, Outgoing
from bus_tasks.identity import OFF, Speech, TrustPolicy, refusal
from bus_tasks.transport import Bus, Delivery, wakeup_handle

log = logging.getLogger(__name__)

# The loop waits on the broker socket with its other sockets (``add_reader``) and reads what is
# there without blocking; a tick keeps the AMQP heart-beats going. Without a socket to wait on
# (memory://, redis://) the connection is polled in short turns instead.
TICK_S = 0.1
POLL_S = 0.001
MAX_BURST = 64  # deliveries handled per wake-up before the loop serves its clients again

OnReply = Callable[[str, bytes], None]


class RpcBridge:
    """Publishes requests to ``bus_tasks.rpc`` and hands each reply to ``on_reply``, all in one loop.

    :meth:`start` (any thread) connects; from :meth:`attach` on, only the loop's thread uses the
    connection, except while a lost connection is recovered: that blocks, so it runs in a thread
    of its own while the loop serves on and holds new requests until the connection is back.
    Calls in flight are then sent again on the new connection (see :mod:`.inflight`).
    """

    def __init__(
        self, connection: Bus, on_reply: OnReply, *, trust: TrustPolicy = OFF, door: str | None = None
    ) -> None:
        """Args:
        trust: whose replies are believed (SPEC 15: with identity "broker", aggregators' only).
        door: the front door it publishes for (``stomp``, ``http``): each request says so, and
            for whom (SPEC 16), which the aggregator believes only from a user in front_doors.
        """
        self.connection = connection
        self.trust = trust
        self.door = door
        self._on_reply = on_reply
        self._reply_queue = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._held: deque[Outgoing] = deque()  # requests that came while the connection was away
        self._inflight = InFlight()  # requests sent or held, not answered yet
        self._unanswered = False  # the recovery under way is for calls unanswered after a failover
        self._recovery: threading.Thread | None = None
        self._closed = False
        self._released = False  # the connection is closed

    @property
    def recovering(self) -> bool:
        """A lost connection is being recovered (requests are held meanwhile)."""
        return self._recovery is not None

    def start(self, timeout_s: float | None = None) -> None:
        """Connect, declare the reply queue and consume it (blocking; before :meth:`attach`).

        Raises:
            the connection's errors; TimeoutError when the broker was not reached within ``timeout_s``.
        """
        conn = self.connection
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bound = contextlib.nullcontext() if deadline is None else conn.bounded(deadline)
        try:
            with bound:
                conn.connect()
                self._reply_queue = conn.topology.declare_reply_queue(names.REPLY_QUEUE_PREFIX)
                conn.consume(self._reply_queue, self._handle, no_ack=True)
        except conn.errors as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the broker connection was not ready in time") from exc
            raise

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve from ``loop`` (in its thread) from now on."""
        self._loop = loop
        self._watch()
        self._guarded(self._drain_ready)  # what arrived before

    def submit(
        self, body: bytes, correlation_id: str, deadline: float, *, on_behalf_of: str | None = None
    ) -> None:
        """Publish a request now, or hold it while the connection is recovered (loop thread);
        ``on_behalf_of``: the client's identity (None: anonymous).

        Never drains: no reply is handled before it returns.
        """
        item = Outgoing(body, correlation_id, deadline, on_behalf_of)
        if self._closed:
            return  # its caller is answered at its deadline
        self._inflight.track(item, time.monotonic())
        if self._recovery is not None or self._held:
            now = time.monotonic()
            while self._held and self._held[0].deadline <= now:
                self._held.popleft()  # answered with a timeout already
            self._held.append(item)
            return
        try:
            self._publish(item)
        except self.connection.errors as exc:
            self._lost(exc)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop serving and close the connection (loop thread); waits for a recovery at most ``timeout_s``."""
        self._closed = True
        self._unwatch()
        recovery = self._recovery
        if recovery is not None:
            recovery.join(timeout_s)
            if recovery.is_alive():
                return  # a daemon thread still waiting for the broker; it closes the connection
        self._release()

    # -- the connection on the loop --------------------------------------------------------

    def _handle(self, delivery: Delivery) -> None:
        if delivery.correlation_id is None:
            log.debug("reply without correlation id dropped")
            return
        reason = refusal(self.trust, Speech.REPLY, None, delivery.user_id)
        if reason is not None:
            log.warning("reply %r dropped: %s", delivery.correlation_id, reason)
            return
        if not self._inflight.answered(delivery.correlation_id):
            log.debug("reply %r dropped: answered already or past its deadline", delivery.correlation_id)
            return
        self._on_reply(delivery.correlation_id, delivery.body)

    def _publish(self, item: Outgoing) -> None:
        now = time.monotonic()
        remaining = item.deadline - now
        if remaining <= 0:
            return  # its caller has been answered with a timeout already
        headers: dict[str, object] = {names.HEADER_SENT_AT: time.time()}
        if self._inflight.was_published(item.correlation_id):
            headers[names.HEADER_RESENT] = True  # a stop sent again goes to its owner, which knows
        if self.door is not None:
            headers[names.HEADER_DOOR] = self.door
            if item.on_behalf_of is not None:
                headers[names.HEADER_ON_BEHALF_OF] = item.on_behalf_of
        self.connection.publish(
            item.body,
            routing_key=names.RPC_QUEUE,
            reply_to=self._reply_queue,
            correlation_id=item.correlation_id,
            expiration_s=remaining,
            headers=headers,
            persistent=False,
        )
        self._inflight.published(item, now)

    def _watch(self) -> None:
        assert self._loop is not None
        self._fd = wakeup_handle(self.connection)
        if self._fd is not None:
            self._loop.add_reader(self._fd, self._readable)
        self._timer = self._loop.call_later(TICK_S if self._fd is not None else POLL_S, self._tick)

    def _unwatch(self) -> None:
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._fd = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _readable(self) -> None:
        self._guarded(self._drain_ready)

    def _tick(self) -> None:
        self._timer = None
        self._guarded(self._drain_ready)  # also sends and checks the AMQP heart-beats
        self._guarded(self._check_unanswered)
        if self._timer is None and self._recovery is None and not self._closed:
            assert self._loop is not None
            self._timer = self._loop.call_later(TICK_S if self._fd is not None else POLL_S, self._tick)

    def _drain_ready(self) -> None:
        """Handle what is there without waiting: py-amqp may hold frames that select does not see."""
        for _ in range(MAX_BURST):
            if not self.connection.drain(0):
                return
        assert self._loop is not None
        self._loop.call_soon(self._readable)  # more waits: after the loop's other callbacks

    def _guarded(self, work: Callable[[], None]) -> None:
        if self._closed or self._recovery is not None:
            return
        try:
            work()
        except self.connection.errors as exc:
            self._lost(exc)

    # -- recovery --------------------------------------------------------------------------

    def _check_unanswered(self) -> None:
        """Shortly after a failover, calls unanswered for a quarter of their time go again on a
        new connection; not while a call that may not be sent twice waits, whose reply the old
        one would lose."""
        now = time.monotonic()
        inflight = self._inflight
        inflight.prune(now)
        if inflight.resend_due(now) and not inflight.once_only_in_flight(now):
            log.info("calls unanswered after a failover: sent again on a new connection")
            self._unanswered = True
            self._start_recovery()

    def _lost(self, exc: BaseException) -> None:
        log.warning("broker connection lost (%s); recovering", exc)
        self._unanswered = False
        self._start_recovery()

    def _start_recovery(self) -> None:
        self._unwatch()
        self._recovery = threading.Thread(target=self._recover, name="stomp-bridge-recovery", daemon=True)
        self._recovery.start()

    def _recover(self) -> None:
        """In the recovery thread: the loop does not touch the connection until it is done."""
        error: BaseException | None = None
        try:
            self.connection.recover()
        except BaseException as exc:
            error = exc
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._recovered, error)
        except RuntimeError:  # the loop is closed: nobody else will close the connection
            self._release()

    def _recovered(self, error: BaseException | None) -> None:
        self._recovery = None
        if self._closed:
            self._release()
            return
        if error is not None:
            log.error("the stomp bridge stopped: recovering the broker connection failed: %s", error)
            self._closed = True
            self._release()
            return
        now = time.monotonic()
        unanswered, self._unanswered = self._unanswered, False
        if not unanswered:
            self._inflight.failed_over(now)
        # A request on the lost connection may never have reached the RPC queue, and the reply
        # queue (self-deleting) lost what it held: repeatable calls go again, others time out.
        again = self._inflight.to_resend(now, unanswered=unanswered)
        log.info("broker connection back; %d calls sent again, %d held requests", len(again), len(self._held))
        self._watch()
        self._guarded(lambda: self._publish_held(again))
        self._guarded(self._drain_ready)

    def _publish_held(self, again: list[Outgoing]) -> None:
        for item in again:
            self._publish(item)  # one lost in a new loss: sent again after that recovery
        while self._held:
            self._publish(self._held.popleft())  # one lost in a new loss: its caller times out

    def _release(self) -> None:
        if not self._released:
            self._released = True
            with contextlib.suppress(Exception):
                self.connection.close()
