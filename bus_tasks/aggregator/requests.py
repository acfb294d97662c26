"""The RPC queue's deliveries: one request or a batch, answered at once or once a forwarded
command is answered (SPEC sections 5 and 9). The aggregator's loop calls :meth:`Requests.on_request`."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import KW_ONLY, dataclass

from bus_tasks.aggregator import methods
from bus_tasks.aggregator.authorization import caller_of
from bus_tasks.aggregator.batch import BatchReply
from bus_tasks.aggregator.ingest import Ingest
from bus_tasks.aggregator.relay import ControlRelay, Deliver
from bus_tasks.errors import BusTasksError, InvalidRequest
from bus_tasks.protocol import jsonrpc
from bus_tasks.protocol.context import CallContext
from bus_tasks.transport import Delivery

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Arrival:
    """A request as it arrived: its caller's context, its expiration, and when (a forwarded
    command's deadline counts from there)."""

    context: CallContext
    expiration_ms: int | None
    received: float  # epoch seconds
    received_mono: float


@dataclass(eq=False)
class Requests:
    """Serves requests from a view whose events are durable; stop, revert and retag go through
    the control relay."""

    dispatcher: methods.Dispatcher
    relay: ControlRelay
    ingest: Ingest
    counts: Counter[str]
    _: KW_ONLY
    max_request_bytes: int
    max_batch_calls: int
    # Who may speak for their clients (SPEC 16); None: front doors' headers are not read.
    front_doors: frozenset[str] | None = None

    def on_request(self, delivery: Delivery) -> None:
        arrival = Arrival(
            caller_of(
                delivery.user_id,
                delivery.headers,
                front_doors=self.front_doors,
                deadline=delivery.deadline(),
                correlation_id=delivery.correlation_id,
            ),
            delivery.expiration_ms,
            received=time.time(),
            received_mono=time.monotonic(),  # the forward deadline counts from here
        )
        deadline = arrival.context.deadline
        if deadline is not None and deadline <= arrival.received:
            self.counts["requests_expired"] += 1
            log.info("rpc request %r dropped: its caller gave up", delivery.correlation_id)
            delivery.ack()
            return
        deliver = self.relay.deliver_to(delivery)
        self.counts["requests"] += 1
        if len(delivery.body) > self.max_request_bytes:
            error = InvalidRequest(f"request of {len(delivery.body)} bytes is too large")
            deliver(jsonrpc.error_body(None, error))
        elif jsonrpc.is_batch(delivery.body):
            self._serve_batch(delivery, arrival, deliver)
        else:
            self.ingest.flush()  # answer from a view whose events are durable
            reply = self.dispatcher.handle(delivery.body, arrival.context)
            if reply.forward is not None and delivery.reply_to:
                self._forward(reply, arrival, deliver)
            elif reply.body is not None:
                deliver(reply.body)
        delivery.ack()

    def _serve_batch(self, delivery: Delivery, arrival: Arrival, deliver: Deliver) -> None:
        """A JSON-RPC batch: one reply array, answered once every member is (SPEC 9)."""
        try:
            members = jsonrpc.parse_batch(delivery.body)
            if len(members) > self.max_batch_calls:
                raise InvalidRequest(
                    f"a batch of {len(members)} calls is more than the {self.max_batch_calls} allowed"
                )
        except BusTasksError as exc:
            log.warning("rpc batch %r refused: %s", delivery.correlation_id, exc.message)
            deliver(jsonrpc.error_body(None, exc))
            return
        self.ingest.flush()  # answer from a view whose events are durable
        self.counts["batches"] += 1
        batch = BatchReply(deliver)
        for member in members:
            reply = self.dispatcher.handle_member(member, arrival.context)
            if reply.forward is not None:
                slot = None if reply.notification else batch.reserve()
                self._forward(reply, arrival, batch.filler(slot))
            elif reply.body is not None and not reply.notification:
                batch.add(reply.body)
        batch.close()

    def _forward(self, reply: methods.Reply, arrival: Arrival, deliver: Deliver) -> None:
        assert reply.forward is not None
        self.relay.forward(
            reply.forward,
            reply.request_id,
            reply.method,
            context=arrival.context,
            params=reply.params,
            deliver=deliver,
            expiration_ms=arrival.expiration_ms,
            received=arrival.received,
            received_mono=arrival.received_mono,
        )
