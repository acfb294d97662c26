"""The engine side: call the aggregator with a real deadline; typed errors; a VDSM facade.

Failures are told fast and typed: ``BrokerRefused`` (login or vhost refused) at once,
``BrokerUnavailable`` naming the broker once the connection gives up, ``NoAggregator`` when the
RPC queue does not exist (checked when the client starts and after every reconnect) or, after
``PROBE_AFTER_S`` without a reply, nothing consumes it. Where the transport cannot tell (Redis and
memory:// count no consumers and keep no record of an empty queue) a call without an aggregator
ends at its deadline with ``DeadlineExceeded``, as before.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from bus_tasks import names, transport
from bus_tasks.config import DEFAULT_RPC_TIMEOUT_S, redact_url
from bus_tasks.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    InvalidParameter,
    NoAggregator,
    ReplyTooLarge,
    ShutdownRequested,
)
from bus_tasks.identity import OFF, Speech, TrustPolicy, refusal
from bus_tasks.protocol import jsonrpc, methods, paging
from bus_tasks.protocol.methods import FAILOVER_WINDOW_S, RESEND_AFTER_S, MethodName
from bus_tasks.protocol.replies import Outcome, unpack, unpack_batch
from bus_tasks.transport import Bus, Delivery
from bus_tasks.vdsm_facade import VdsmFacade

if TYPE_CHECKING:
    from bus_tasks.watching import Watch

log = logging.getLogger(__name__)

# After this long without a reply, ask the broker once whether anything consumes the RPC queue.
PROBE_AFTER_S = 1.0


class TasksClient:
    """Calls the aggregator over the request/reply queue. Thread-safe (one call at a time).

    Args:
        connection: the broker connection (or its URL).
        timeout_s: the default deadline of a call.
        wait_for_aggregator: wait out a call's deadline for an aggregator to come (e.g. one
            restarting) instead of raising ``NoAggregator`` as soon as none serves.
        rpc_queue: where requests go: the queue every aggregator serves, or one aggregator's
            own (its ``rpcQueue`` in :meth:`aggregators`), to ask that one alone.
        trust: whose replies are believed (SPEC 15: with identity "broker", aggregators' only).
    """

    def __init__(
        self,
        connection: Bus | str,
        *,
        timeout_s: float = DEFAULT_RPC_TIMEOUT_S,
        wait_for_aggregator: bool = False,
        rpc_queue: str = names.RPC_QUEUE,
        trust: TrustPolicy = OFF,
    ) -> None:
        self.trust = trust
        self.connection: Bus = transport.open(connection) if isinstance(connection, str) else connection
        self.timeout_s = timeout_s
        self.rpc_queue = rpc_queue
        self._pages_listings = False  # set once a listing was too large for one reply
        self.wait_for_aggregator = wait_for_aggregator
        self._lock = threading.Lock()
        self._replies: dict[str, bytes] = {}
        self._waiting: str | None = None
        self._queue = ""  # the reply queue's name, once declared
        self._started = False
        self._failed_over_at = -FAILOVER_WINDOW_S  # when this client last recovered its connection
        self._rpc_queue_checked = wait_for_aggregator  # on the current connection (again after a reconnect)
        self._abandoned = threading.Event()  # see abandon()

    def _start(self) -> None:
        """Declare the reply queue and consume it (once); check the RPC queue (once per connection):
        ``NoAggregator`` when it does not exist on the broker."""
        if not self._started:
            self._queue = self.connection.topology.declare_reply_queue(names.REPLY_QUEUE_PREFIX)
            self._started = True  # from here on, a reconnect re-declares and re-consumes it
            self.connection.consume(self._queue, self._on_reply, no_ack=True)
        if not self._rpc_queue_checked:
            admin = transport.admin(self.connection)  # the broker's word, where it has one
            if admin is not None and admin.queue_exists(self.rpc_queue) is False:
                raise NoAggregator(
                    redact_url(self.connection.url),
                    f"the queue {self.rpc_queue} does not exist on this broker and vhost"
                    " (no aggregator ever ran here: start bus-tasks serve)",
                )
            self._rpc_queue_checked = True

    def _probe(self) -> None:
        """Once a call waited ``PROBE_AFTER_S``: is anything consuming the RPC queue at all?

        Raises:
            NoAggregator: when the broker counts no consumer (RabbitMQ; elsewhere it cannot tell).
        """
        admin = transport.admin(self.connection)
        if admin is not None and admin.consumer_count(self.rpc_queue, passive=True) == 0:
            raise NoAggregator(
                redact_url(self.connection.url),
                f"nothing consumes {self.rpc_queue} (no bus-tasks serve is running)",
            )

    def _on_reply(self, delivery: Delivery) -> None:
        reason = refusal(self.trust, Speech.REPLY, None, delivery.user_id)
        if reason is not None:
            log.warning("reply %r dropped: %s", delivery.correlation_id, reason)
            return
        if delivery.correlation_id is not None and delivery.correlation_id == self._waiting:
            self._replies[delivery.correlation_id] = delivery.body
        else:
            log.debug("stale reply %r dropped", delivery.correlation_id)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        rpc_queue: str | None = None,
    ) -> Any:
        """Call ``method`` and return its result, within ``timeout_s`` from now (sent to
        ``rpc_queue``, by default this client's: one aggregator's own queue asks that one alone).

        Raises:
            DeadlineExceeded: when no reply arrived in time.
            NoAggregator: when no aggregator serves the broker (the RPC queue is missing, or
                nothing consumes it), within about ``PROBE_AFTER_S``: RabbitMQ only.
            BrokerRefused: when the broker refuses the login or the vhost (not retried).
            BrokerUnavailable: when the broker could not be reached in time (or within the
                connection's ``connect_retries``). A call whose connection broke is sent again
                on a new one, a stop as a read: its call key makes a repeat harmless (SPEC 17).
            BusTasksError: the typed error the aggregator answered (UnknownTask, InvalidParams ...).
        """
        correlation_id = uuid.uuid4().hex
        body = jsonrpc.request_body(correlation_id, method, params or {})
        repeatable = method in methods.REPEATABLE
        reply = self._round_trip(method, body, correlation_id, repeatable, timeout_s, rpc_queue=rpc_queue)
        return unpack(reply)

    def batch(
        self, calls: Sequence[tuple[str, dict[str, Any] | None]], *, timeout_s: float | None = None
    ) -> list[Outcome]:
        """Send ``calls`` as one JSON-RPC batch; their outcomes, in the order of ``calls``.

        A call that failed does not fail the others: its outcome carries the typed error, and
        :meth:`Outcome.result` raises it.

        Raises:
            InvalidParameter: for an empty batch.
            DeadlineExceeded, NoAggregator, BrokerUnavailable: as :meth:`call`, for the batch as a whole.
            BusTasksError: the error the aggregator answered for the whole batch (e.g. too large).
        """
        if not calls:
            raise InvalidParameter("calls", "[]", message="Invalid parameter: a batch needs a call")
        ids = [uuid.uuid4().hex for _ in calls]
        body = jsonrpc.batch_body(
            [
                jsonrpc.request_body(i, method, params or {})
                for i, (method, params) in zip(ids, calls, strict=True)
            ]
        )
        repeatable = all(method in methods.REPEATABLE for method, _ in calls)
        label = f"a batch of {len(calls)} calls"
        reply = self._round_trip(label, body, uuid.uuid4().hex, repeatable, timeout_s)
        return unpack_batch(reply, ids, [method for method, _ in calls])

    def _round_trip(
        self,
        method: str,
        body: bytes,
        correlation_id: str,
        repeatable: bool,
        timeout_s: float | None,
        *,
        rpc_queue: str | None = None,
    ) -> bytes:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        with self._lock, self.connection.bounded(deadline):
            self._waiting = correlation_id
            try:
                return self._exchange(
                    method, body, correlation_id, deadline, timeout, repeatable=repeatable, queue=rpc_queue
                )
            except self.connection.errors as exc:
                # Connecting counts against the deadline too (bounded() above).
                raise BrokerUnavailable(redact_url(self.connection.url), str(exc)) from exc
            finally:
                self._waiting = None
                self._replies.clear()

    def _exchange(
        self,
        method: str,
        body: bytes,
        correlation_id: str,
        deadline: float,
        timeout: float,
        *,
        repeatable: bool,
        queue: str | None,
    ) -> bytes:
        """Send the request and wait for its reply. After a lost connection, reconnect and send
        it again (the same correlation id, marked resent), unless it is not repeatable and may
        have reached the aggregator."""
        if not self._started:  # retries as the connection says, within the deadline: not again below
            self.connection.connect()
        sent = resent = False
        probe_at = resend_at = 0.0  # when to ask whether anything consumes the RPC queue (0: asked)
        while correlation_id not in self._replies:
            try:
                if not sent:
                    self._start()
                    sent = True  # from here the aggregator may get it, even if publishing fails
                    self._send(body, correlation_id, deadline, queue or self.rpc_queue, resent=resent)
                    resent = True
                    probe_at = 0.0 if self.wait_for_aggregator else time.monotonic() + PROBE_AFTER_S
                    fresh = repeatable and time.monotonic() - self._failed_over_at < FAILOVER_WINDOW_S
                    resend_at = time.monotonic() + max(RESEND_AFTER_S, timeout / 4) if fresh else 0.0
                now = time.monotonic()
                if resend_at and now >= resend_at:
                    log.info("%s unanswered after a failover: sent again on a new connection", method)
                    sent = self._fail_over(lost=False)
                    continue
                remaining = deadline - now
                if self._abandoned.is_set():
                    raise ShutdownRequested(f"{method} abandoned: its client is closing")
                if remaining <= 0:
                    raise DeadlineExceeded(method, timeout)
                if probe_at and now >= probe_at:
                    probe_at = 0.0
                    self._probe()
                wait_s = min(remaining, 1.0) if not probe_at else min(remaining, max(probe_at - now, 0.001))
                self.connection.drain(wait_s)
            except self.connection.errors:
                if sent and not repeatable:
                    raise
                sent = self._fail_over()
        return self._replies.pop(correlation_id)

    def _fail_over(self, *, lost: bool = True) -> bool:
        """A new connection, maybe to another node; False: the call is not sent on it yet. ``lost``:
        the old one was lost, which opens the window for sending reads again; a new one made to
        send a read again does not (else slow replies would keep it open)."""
        self.connection.recover()
        if lost:
            self._failed_over_at = time.monotonic()
        self._rpc_queue_checked = self.wait_for_aggregator  # checked again (another node)
        return False

    def _send(self, body: bytes, correlation_id: str, deadline: float, queue: str, *, resent: bool) -> None:
        remaining = max(deadline - time.monotonic(), 0.001)
        headers: dict[str, Any] = {names.HEADER_SENT_AT: time.time()}
        if resent:  # a stop or revert sent again goes to its owner, which knows if it was done
            headers[names.HEADER_RESENT] = True
        self.connection.publish(
            body,
            routing_key=queue,
            reply_to=self._queue,
            correlation_id=correlation_id,
            expiration_s=remaining,
            headers=headers,
            persistent=False,
        )

    # -- the API ------------------------------------------------------------------------

    def get_all_tasks(
        self, tags: str | Sequence[str] | None = None, options: dict[str, Any] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every task (``tags=None``), or those carrying any of ``tags`` (all with ``{"match": "all"}``),
        whatever their number: a listing too large for one reply is fetched page by page.
        With ``options.limit`` (and ``continue``), the one page asked (SPEC section 14).
        """
        tag_param = list(tags) if tags is not None and not isinstance(tags, str) else tags
        asked_page = options is not None and ("limit" in options or "continue" in options)
        if asked_page or not self._pages_listings:
            try:
                return self.call(MethodName.GET_ALL_TASKS, {"tags": tag_param, "options": options})  # type: ignore[no-any-return]
            except ReplyTooLarge:
                if asked_page:
                    raise
                self._pages_listings = True  # the listings are large here: paged from the start now
        pages = paging.collect(lambda params: self.call(MethodName.GET_ALL_TASKS, params), tag_param, options)
        return pages.result(with_revision=bool(options and options.get("revision")))

    def get_all_tasks_info(self) -> dict[str, dict[str, Any]]:
        """VDSM's ``getAllTasksInfo``: ``{id: {"id", "verb"}}`` of tasks tagged ``spm``."""
        return self.call(MethodName.GET_ALL_TASKS_INFO)  # type: ignore[no-any-return]

    def get_all_tasks_statuses(self) -> dict[str, dict[str, Any]]:
        """VDSM's ``getAllTasksStatuses``: ``{id: status}`` of tasks tagged ``spm``."""
        return self.call(MethodName.GET_ALL_TASKS_STATUSES)  # type: ignore[no-any-return]

    def get_task_status(self, task_id: str) -> dict[str, Any]:
        return self.call(MethodName.GET_STATUS, {"taskID": task_id})  # type: ignore[no-any-return]

    def get_task_info(self, task_id: str) -> dict[str, Any]:
        return self.call(MethodName.GET_INFO, {"taskID": task_id})  # type: ignore[no-any-return]

    def get_task_details(self, task_id: str) -> dict[str, Any]:
        """One task's whole record (TaskDetails, as :meth:`get_all_tasks` lists it)."""
        return self.call(MethodName.GET_DETAILS, {"taskID": task_id})  # type: ignore[no-any-return]

    def stop_task(self, task_id: str) -> bool:
        """Ask the owning subsystem to stop a task (asynchronous: it moves on to aborting)."""
        return bool(self.call(MethodName.STOP, {"taskID": task_id}))

    def revert_task(self, task_id: str) -> bool:
        """Ask the owning subsystem to revert a done task."""
        return bool(self.call(MethodName.REVERT, {"taskID": task_id}))

    def clear_task(self, task_id: str, *, force: bool = False) -> bool:
        """Remove a done task from the view (410 while it is not done).

        ``force``: remove it whatever its state, e.g. a task whose subsystem will never come back
        (an operator's call, logged by the aggregator); its owner, if it comes back, drops it.
        """
        params: dict[str, Any] = {"taskID": task_id}
        if force:
            params["force"] = True
        return bool(self.call(MethodName.CLEAR, params))

    def retag_task(self, task_id: str, tags: Sequence[str]) -> list[str]:
        """Replace a task's tags, through its owner (so that its later updates keep them).

        Returns the new tags once the owner published them; code 100 when it does not answer.
        """
        return self.call(MethodName.RETAG, {"taskID": task_id, "tags": list(tags)})  # type: ignore[no-any-return]

    def aggregators(self) -> list[dict[str, Any]]:
        """The aggregators serving the broker (name, revision, tasks, uptime, own RPC queue):
        the one that answered first, then those it heard from."""
        return self.call(MethodName.GET_AGGREGATORS)  # type: ignore[no-any-return]

    def subsystems(self) -> dict[str, dict[str, Any]]:
        """Every subsystem the aggregator heard from or holds tasks of, with its state
        (``alive``, ``lost``, ``stopped``, ``unknown``), last heartbeat and task count."""
        return self.call(MethodName.GET_SUBSYSTEMS)  # type: ignore[no-any-return]

    def watch(
        self,
        tags: str | Sequence[str] | None = None,
        match: Literal["any", "all"] = "any",
        since: int | None = None,
    ) -> Watch:
        """The changes of the tasks carrying any (or all) of ``tags``: a listing first (unless
        ``since`` a revision, to resume), then each change as it is applied (docs/watching.md).

        ``for event in client.watch(["spm"]): ...``; ``close()`` the watch to end it. It uses
        this client's connection: give it a client of its own.

        Raises (while iterating):
            RevisionGone: when ``since`` is older than the aggregator keeps: watch from None.
        """
        from bus_tasks.watching import Watch  # noqa: PLC0415 - a client that never watches skips it

        return Watch(self, tags, match=match, since=since)

    def pump(self, timeout_s: float) -> None:
        """Handle what arrives on this client's connection within ``timeout_s`` (a watch's feed);
        a lost connection is recovered."""
        with self._lock:
            try:
                self.connection.drain(timeout_s)
            except self.connection.errors:
                self.connection.recover()

    @property
    def vdsm(self) -> VdsmFacade:
        """The wrapped VDSM Python-API form of the same calls."""
        return VdsmFacade(self)

    def abandon(self) -> None:
        """From another thread: a call waiting for its reply (a watch failing over, say) gives up
        with ``ShutdownRequested`` within a second, rather than at its deadline."""
        self._abandoned.set()

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> TasksClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
