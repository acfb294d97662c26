"""The STOMP 1.2 front door (VDSM's wire): an asyncio server that bridges SENDs to ``bus_tasks.rpc``."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bus_tasks import codec
from bus_tasks.errors import BusTasksError, DeadlineExceeded, TooManyRequests
from bus_tasks.frontdoors.bridge import RpcBridge
from bus_tasks.frontdoors.stomp.frames import Frame, message
from bus_tasks.frontdoors.stomp.session import BadClient, Session, StompLimits, negotiate_heartbeat
from bus_tasks.protocol import jsonrpc

__all__ = [
    "REQUEST_DESTINATIONS",
    "BadClient",
    "StompFrontDoor",
    "StompLimits",
    "error_reply",
    "negotiate_heartbeat",
    "timeout_reply",
    "too_many",
]

log = logging.getLogger(__name__)

REQUEST_DESTINATIONS = frozenset({"jms.topic.vdsm_requests", "jms.topic.vdsm_irs_requests"})


@dataclass(eq=False, slots=True)
class Pending:
    """A forwarded request waiting for its reply until ``timer`` fires."""

    session: Session
    reply_to: str
    body: bytes
    timer: asyncio.TimerHandle


class StompFrontDoor:
    """Serves STOMP clients on one ``RpcBridge``; many clients, one broker connection, one loop."""

    def __init__(
        self,
        *,
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        limits: StompLimits | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self.limits = limits if limits is not None else StompLimits()
        self._pending: dict[str, Pending] = {}
        self._sessions: set[Session] = set()
        self._numbers = itertools.count(1)
        # Ids unique within this door, without a uuid4 per message: a random prefix and a count.
        self._id_prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bridge: RpcBridge | None = None
        self.refusals: Counter[str] = Counter()  # connections closed for a limit, by reason
        self.over_pending = 0  # requests answered at once for being over max_pending

    @property
    def pending(self) -> int:
        """Forwarded requests still waiting for their reply."""
        return len(self._pending)

    @property
    def sessions(self) -> int:
        """Connected clients."""
        return len(self._sessions)

    async def start(self, bridge: RpcBridge, host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port`` (port 0: a free one) with ``bridge`` started, now run by this loop."""
        self._loop = asyncio.get_running_loop()
        self.bridge = bridge
        bridge.attach(self._loop)
        # TLS is started by each session (its handshake bounded and logged there), not the server.
        return await self._loop.create_server(self._session, host, port)

    async def close_sessions(self, timeout_s: float = 5.0) -> None:
        """Close every client connection and wait for their heart-beat and handshake tasks (at shutdown)."""
        tasks = [task for s in self._sessions for task in s.tasks()]
        for session in list(self._sessions):
            session.close()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    # -- replies (in the loop, from the bridge's drain) -------------------------------------

    def on_reply(self, correlation_id: str, body: bytes) -> None:
        """The bridge's ``on_reply``: answer the caller."""
        pending = self._pending.pop(correlation_id, None)
        if pending is None:
            log.debug("stale reply %s dropped", correlation_id)
            return
        pending.timer.cancel()
        pending.session.in_flight -= 1
        self._deliver(pending.reply_to, body)

    def _on_timeout(self, correlation_id: str) -> None:
        pending = self._pending.pop(correlation_id, None)
        if pending is not None:
            pending.session.in_flight -= 1
            log.warning("no reply to %s within %gs", correlation_id, self.timeout_s)
            self._deliver(pending.reply_to, timeout_reply(pending.body, self.timeout_s))

    def _deliver(self, destination: str, body: bytes) -> None:
        """A MESSAGE to every subscription of ``destination``, across all sessions."""
        for session in self._sessions:
            for sub_id, subscribed in session.subscriptions.items():
                if subscribed == destination:
                    session.write(message(destination, sub_id, f"{self._id_prefix}-{next(self._ids)}", body))

    # -- sessions (Session's Door) ---------------------------------------------------------

    def _session(self) -> Session:
        return Session(self, next(self._numbers), self.limits, self.ssl_context)

    def opened(self, session: Session) -> bool:
        # One too many is kept too until it has said so in an ERROR frame and closed (under TLS,
        # after its handshake): it is closed at shutdown with the others.
        admitted = len(self._sessions) < self.limits.max_connections
        self._sessions.add(session)
        return admitted

    def refused(self, reason: str) -> None:
        self.refusals[reason] += 1

    def dropped(self, session: Session) -> None:
        self._sessions.discard(session)
        for correlation_id, pending in list(self._pending.items()):
            if pending.session is session:
                pending.timer.cancel()
                del self._pending[correlation_id]

    def forward(self, session: Session, frame: Frame) -> None:
        """A SEND: to ``bus_tasks.rpc`` with its own correlation id and the caller's deadline."""
        destination = frame.headers.get("destination")
        reply_to = frame.headers.get("reply-to")
        if destination is None or reply_to is None:
            raise BadClient("SEND needs destination and reply-to")
        if destination not in REQUEST_DESTINATIONS:
            raise BadClient(f"SEND to {destination[:80]!r}: not a request destination")
        assert self._loop is not None
        assert self.bridge is not None
        limit = self.limits.max_pending
        if session.in_flight >= limit:
            session.over_pending += 1
            self.over_pending += 1
            log.log(
                logging.WARNING if session.over_pending == 1 else logging.DEBUG,  # one line, not a flood
                "stomp client %d from %s: a request over %d in flight answered %d (%d so far)",
                session.number,
                session.peer,
                limit,
                TooManyRequests.code,
                session.over_pending,
            )
            self._deliver(reply_to, error_reply(frame.body, lambda method: too_many(method, limit)))
            return
        session.in_flight += 1
        correlation_id = f"{self._id_prefix}{next(self._ids):x}"
        # Published first, registered right after: no reply is handled before the loop drains
        # the broker connection again, and the call's bookkeeping is off its critical path.
        self.bridge.submit(
            frame.body, correlation_id, time.monotonic() + self.timeout_s, on_behalf_of=session.identity
        )
        timer = self._loop.call_later(self.timeout_s, self._on_timeout, correlation_id)
        self._pending[correlation_id] = Pending(session, reply_to, frame.body, timer)
        log.debug(
            "stomp client %d: SEND request %s reply-to %s ovirtCorrelationId %s",
            session.number,
            correlation_id,
            reply_to,
            frame.headers.get("ovirtCorrelationId", "-"),
        )


def too_many(method: str, limit: int) -> TooManyRequests:
    """The answer to a request over ``limit`` in flight on its connection."""
    return TooManyRequests(
        message=f"{TooManyRequests.title}: {method} not sent, at most {limit} per connection"
    )


def timeout_reply(body: bytes, timeout_s: float) -> bytes:
    """A General Exception (100) response for each id of the request (or batch) in ``body``."""
    return error_reply(body, lambda method: DeadlineExceeded(method, timeout_s))


def error_reply(body: bytes, error_for: Callable[[str], BusTasksError]) -> bytes:
    """The error ``error_for(method)`` as the response to each id of the request (or batch) in ``body``."""
    try:
        request = codec.loads(body)
    except codec.DecodeError:
        return jsonrpc.error_body(None, error_for("the request"))
    members = request if isinstance(request, list) else [request]
    responses = [
        jsonrpc.error_body(m["id"], error_for(str(m.get("method", "the request"))))
        for m in members
        if isinstance(m, dict) and m.get("id") is not None
    ]
    if isinstance(request, list):
        return jsonrpc.batch_body(responses)
    return responses[0] if responses else jsonrpc.error_body(None, error_for("the request"))
