"""The control relay: stop and revert go to the owning subsystem; its answer, or code 100, comes back."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from bus_tasks import names
from bus_tasks.aggregator.methods import Forward
from bus_tasks.aggregator.policy import ADMIT_ALL, CallPolicy
from bus_tasks.errors import BusTasksError, GeneralError, InternalError, PublishRefused, ReplyTooLarge
from bus_tasks.identity import OFF, Speech, TrustPolicy, refusal
from bus_tasks.protocol import control, jsonrpc
from bus_tasks.protocol.context import CallContext
from bus_tasks.transport import Bus, Delivery

log = logging.getLogger(__name__)

DEFAULT_CONTROL_TIMEOUT_S = 10.0


Deliver = Callable[[bytes], None]
"""Takes the encoded JSON-RPC response of a forwarded call (to the caller, or into its batch)."""


@dataclass(slots=True)
class PendingControl:
    """An RPC waiting for the owning subsystem to answer a forwarded command."""

    request_id: jsonrpc.RequestId
    deliver: Deliver
    deadline: float
    method: str
    task_id: str
    context: CallContext
    command: str = ""
    received_mono: float = 0.0  # when the request arrived: its latency counts from there
    params: BaseModel | None = None  # as bound, for the policy (an audit line names the task)
    subsystem: str = ""  # the owner the command went to: only its identities answer it
    command_body: bytes = b""  # kept when it may go again (it carries a call key: SPEC 17)
    delivered: bool = False  # the broker confirmed the command: its answer may be what was lost


class ControlRelay:
    """Forwards commands to subsystems and answers each caller once: with the subsystem's answer,
    or with code 100 a little before the caller's own deadline."""

    def __init__(
        self,
        connection: Bus,
        counts: Counter[str],
        *,
        policy: CallPolicy = ADMIT_ALL,
        trust: TrustPolicy = OFF,
        max_reply_bytes: int | None = None,
    ) -> None:
        self.connection = connection
        self.trust = trust  # whose answers are believed (SPEC 15)
        self.max_reply_bytes = max_reply_bytes  # a larger reply (a batch's) is answered -32012
        self.counts = counts
        self.policy = policy  # told of each forwarded call once answered (see methods.Dispatcher)
        self.pending: dict[str, PendingControl] = {}
        self.replies = ""  # the name of the queue subsystems answer to, once declared
        self._declared: set[str] = set()
        self._recovered = False  # the connection was recovered: see send_again()

    def start(self) -> None:
        """Declare the reply queue and consume it (answers are never redelivered: no ack)."""
        self.replies = self.connection.topology.declare_reply_queue(names.CONTROL_REPLY_PREFIX)
        self.connection.consume(self.replies, self.on_reply, no_ack=True)

    def deliver_to(self, delivery: Delivery) -> Deliver:
        """Where the response to the request in ``delivery`` goes: its reply queue (if any)."""
        reply_to, correlation_id = delivery.reply_to, delivery.correlation_id
        if not reply_to:
            return lambda body: None
        return lambda body: self.reply(reply_to, correlation_id, body)

    def forward(
        self,
        forward: Forward,
        request_id: jsonrpc.RequestId,
        method: str,
        *,
        context: CallContext,
        params: BaseModel | None = None,
        deliver: Deliver,
        expiration_ms: int | None,
        received: float,
        received_mono: float,
    ) -> None:
        """Send ``forward`` to its subsystem; ``deliver`` gets the response, or code 100 in time."""
        timeout_s = expiration_ms / 1000.0 if expiration_ms is not None else DEFAULT_CONTROL_TIMEOUT_S
        # Answer 100 a little before the caller's own deadline, so it hears why.
        margin_s = min(0.25, timeout_s * 0.1)
        control_id = uuid.uuid4().hex
        body = control.command_body(
            control_id, forward.command, forward.task_id, forward.tags, request=forward.request
        )
        pending = self.pending[control_id] = PendingControl(
            request_id=request_id,
            deliver=deliver,
            deadline=received_mono + timeout_s - margin_s,
            method=method,
            task_id=forward.task_id,
            context=context,
            command=forward.command,
            received_mono=received_mono,
            params=params,
            subsystem=forward.subsystem,
            command_body=body if forward.request is not None else b"",
        )
        self._ensure_queue(forward.subsystem)
        self._send(control_id, pending, body, received)
        self.counts[f"control_{forward.command}"] += 1
        log.info("rpc %s task=%s forwarded to %s", method, forward.task_id, forward.subsystem)

    def _send(self, control_id: str, pending: PendingControl, body: bytes, sent_at: float) -> None:
        pending.delivered = False

        def delivered() -> None:  # run by the loop once the broker confirmed it (not if refused)
            pending.delivered = True

        self.connection.publish(
            body,
            exchange=names.CONTROL_EXCHANGE,
            routing_key=pending.subsystem,
            reply_to=self.replies,
            correlation_id=control_id,
            expiration_s=max(pending.deadline - time.monotonic(), 0.001),
            headers={names.HEADER_SENT_AT: sent_at},
            persistent=False,
            on_confirm=delivered,
        )

    def recovered(self) -> None:
        """The connection was lost and is back (maybe on another node): see :meth:`send_again`."""
        self._recovered = True

    def send_again(self) -> int:
        """Once the connection was recovered: the commands still unanswered go again, for their
        answers may have gone with the old reply queue's node. Only those the broker confirmed
        (one unconfirmed goes again with the connection's own unconfirmed messages, unless the
        broker refused it for good: then never) and carrying a call key: the owner answers a
        repeat as the first (SPEC 17). Returns how many went."""
        if not self._recovered:
            return 0
        self._recovered = False
        now = time.monotonic()
        waiting = self.pending.items()
        again = [(c, p) for c, p in waiting if p.command_body and p.delivered and p.deadline > now]
        for control_id, pending in again:
            self._ensure_queue(pending.subsystem)
            self._send(control_id, pending, pending.command_body, time.time())
        if again:
            self.counts["control_sent_again"] += len(again)
            log.info("%d control commands sent again after the connection was recovered", len(again))
        return len(again)

    def on_reply(self, delivery: Delivery) -> None:
        pending = self.pending.get(delivery.correlation_id or "")
        reason = (
            None
            if pending is None
            else refusal(self.trust, Speech.CONTROL_REPLY, pending.subsystem, delivery.user_id)
        )
        if reason is not None:  # the owner's own answer may still come, in time
            self.counts["control_replies_refused_identity"] += 1
            log.warning("control reply for task %s refused: %s", pending.task_id if pending else "?", reason)
            return
        pending = self.pending.pop(delivery.correlation_id or "", None)
        if pending is None:
            self.counts["control_late_replies"] += 1
            log.info("late control reply %r dropped", delivery.correlation_id)
            return
        self.counts[f"control_answered_{pending.command}"] += 1
        outcome = "error"
        try:
            answer = jsonrpc.outcome(jsonrpc.parse_response(delivery.body))
            body = jsonrpc.result_body(pending.request_id, answer)
            outcome = "ok"
        except InternalError:
            log.warning("malformed control reply for task %s", pending.task_id)
            failure = GeneralError(pending.task_id, "malformed reply from the owning subsystem")
            body = jsonrpc.error_body(pending.request_id, failure)
        except BusTasksError as exc:  # the subsystem's answer: passed on as it worded it
            body = jsonrpc.error_body(pending.request_id, exc)
        pending.deliver(body)
        self._done(pending, outcome)

    def wait_s(self, timeout_s: float) -> float:
        """How long the loop may wait before the next pending command is due its code 100."""
        if not self.pending:
            return timeout_s
        due = min(p.deadline for p in self.pending.values()) - time.monotonic()
        return min(max(due, 0.0), timeout_s)

    def time_out(self, now: float | None = None) -> int:
        """Answer code 100 to every caller whose command is past its deadline; returns how many."""
        now = time.monotonic() if now is None else now
        late = [c for c, p in self.pending.items() if p.deadline <= now]
        for control_id in late:
            pending = self.pending.pop(control_id)
            error = GeneralError(
                pending.task_id, f"the owning subsystem did not answer {pending.method} in time"
            )
            self.counts[f"control_timeouts_{pending.command}"] += 1
            log.warning("rpc %s task=%s: subsystem did not answer", pending.method, pending.task_id)
            pending.deliver(jsonrpc.error_body(pending.request_id, error))
            self._done(pending, "timeout")
        return len(late)

    def _done(self, pending: PendingControl, outcome: str) -> None:
        seconds = time.monotonic() - pending.received_mono
        self.policy.served(pending.context, pending.method, outcome, seconds, params=pending.params)

    def tell_cleared(self, task_id: str, subsystem: str) -> None:
        """Tell a subsystem that its task was cleared, so that it drops its copy (even if offline)."""
        self._ensure_queue(subsystem)
        self.connection.publish(
            control.clear_notice(task_id), exchange=names.CONTROL_EXCHANGE, routing_key=subsystem
        )

    def reply(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        if self.max_reply_bytes is not None and len(body) > self.max_reply_bytes:
            error = ReplyTooLarge(size=len(body))
            self.counts["replies_too_large"] += 1
            log.warning("reply %r not sent: %s", correlation_id, error.message)
            body = jsonrpc.error_body(None, error)
        try:
            self._send_reply(reply_to, correlation_id, body)
        except PublishRefused:  # over the broker's own limit (logged): the caller hears why
            self.counts["replies_too_large"] += 1
            refused = jsonrpc.error_body(None, ReplyTooLarge(size=len(body)))  # matched by correlation id
            self._send_reply(reply_to, correlation_id, refused)

    def _send_reply(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        self.connection.publish(body, routing_key=reply_to, correlation_id=correlation_id, persistent=False)

    def _ensure_queue(self, subsystem: str) -> None:
        # The queue is durable: a subsystem that is offline gets the message when it is back.
        if subsystem not in self._declared:
            self.connection.topology.declare_control_queue(subsystem)
            self._declared.add(subsystem)
