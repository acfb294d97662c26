"""The requests a front door's bridge has sent and not seen answered, and which to send again.

A broker node that dies with calls in flight (SPEC 17, issue 25): a request published on the
connection that died may never have reached ``bus_tasks.rpc``, and one that reached the quorum
RPC queue while it elected a leader can be dropped silently (RabbitMQ 3.10) while a new connection
is served, and a new connection made while the election goes on can be refused as well. So, as
``TasksClient`` does, a call of ``methods.REPEATABLE`` (a read, or a change named by its call
key, which the aggregator and the owner answer once) is sent again, marked resent, after the
bridge recovers its connection and, for a window after such a failover, again on a new
connection each time it stays unanswered for a quarter of its time, until its deadline. A call
that was only slow costs the aggregator a second answer then, in that window alone. Any other
call is never sent twice: its caller hears code 100 at the deadline. A reply is handed on once:
a second one for the same correlation id is dropped.

Bookkeeping only, in the bridge's loop; no I/O.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from bus_tasks import codec
from bus_tasks.protocol import methods
from bus_tasks.protocol.methods import FAILOVER_WINDOW_S, RESEND_AFTER_S


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request to publish on ``bus_tasks.rpc``."""

    body: bytes
    correlation_id: str
    deadline: float  # monotonic
    on_behalf_of: str | None = None  # the client's identity (None: anonymous)


def is_repeatable(body: bytes) -> bool:
    """Whether ``body`` (a request or a batch) calls repeatable methods only, so may be sent twice."""
    try:
        request = codec.loads(body)
    except codec.DecodeError:
        return False
    members = request if isinstance(request, list) else [request]
    return bool(members) and all(
        isinstance(member, dict)
        and isinstance(member.get("method"), str)
        and methods.canonical(member["method"]) in methods.REPEATABLE
        for member in members
    )


@dataclass(eq=False, slots=True)
class Sent:
    """One request in flight: held, or published and waiting for its reply."""

    item: Outgoing
    timeout_s: float  # the whole of its time, from when it was submitted
    published: bool = False  # False: held while the connection is away
    resend_at: float = 0.0  # when to send it again on a new connection if unanswered (0: not)
    _repeatable: bool | None = None

    @property
    def repeatable(self) -> bool:
        """May be sent twice (decoded once, when first asked: most are answered before that)."""
        if self._repeatable is None:
            self._repeatable = is_repeatable(self.item.body)
        return self._repeatable


class InFlight:
    """The bridge's requests in flight by correlation id, in the order they were submitted."""

    def __init__(self) -> None:
        self._sent: dict[str, Sent] = {}
        self._timers: list[tuple[float, int, Sent]] = []  # (resend_at, tie-break, entry), a heap
        self._armed = 0
        self._failed_over_at = -FAILOVER_WINDOW_S

    def __len__(self) -> int:
        return len(self._sent)

    def track(self, item: Outgoing, now: float) -> None:
        """``item`` was submitted (held or about to be published)."""
        self._sent[item.correlation_id] = Sent(item, item.deadline - now)

    def was_published(self, correlation_id: str) -> bool:
        """Whether the request went out before: published again, it is marked resent."""
        entry = self._sent.get(correlation_id)
        return entry is not None and entry.published

    def published(self, item: Outgoing, now: float) -> None:
        """``item`` went out (again): shortly after a failover, it is watched for an answer."""
        entry = self._sent.get(item.correlation_id)
        if entry is None:
            return
        entry.published = True
        if now - self._failed_over_at < FAILOVER_WINDOW_S:
            entry.resend_at = now + max(RESEND_AFTER_S, entry.timeout_s / 4)
            self._arm(entry.resend_at, entry)

    def _arm(self, at: float, entry: Sent) -> None:
        self._armed += 1
        heapq.heappush(self._timers, (at, self._armed, entry))

    def answered(self, correlation_id: str) -> bool:
        """Its reply came: True the first time, False for a duplicate or one past its deadline."""
        return self._sent.pop(correlation_id, None) is not None

    def prune(self, now: float) -> None:
        """Forget requests past their deadline (their callers were answered with a timeout)."""
        sent = self._sent
        while sent:
            key = next(iter(sent))
            if sent[key].item.deadline > now:
                return  # submitted in order, with the door's one timeout: the rest are later
            del sent[key]

    def failed_over(self, now: float) -> None:
        """The connection was lost and a new one is up: the window for sending calls again opens
        (not for a connection replaced only to send unanswered calls again: that is no failover)."""
        self._failed_over_at = now

    def resend_due(self, now: float) -> bool:
        """A call published shortly after a failover is still unanswered for its quarter: its
        channel may drop what it publishes. Whether other requests are answered meanwhile tells
        nothing: a channel refused while a leader is elected serves again once it is elected."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, entry = heapq.heappop(timers)
            live = self._sent.get(entry.item.correlation_id) is entry and entry.item.deadline > now
            if live and entry.resend_at == at and entry.repeatable:
                self._arm(at, entry)  # kept until the calls are sent again
                return True
        return False

    def once_only_in_flight(self, now: float) -> bool:
        """A published call that may not be sent twice waits for its reply (a new connection
        would lose the reply)."""
        return any(e.published and e.item.deadline > now and not e.repeatable for e in self._sent.values())

    def to_resend(self, now: float, *, unanswered: bool) -> list[Outgoing]:
        """The published repeatable calls with time left, to send on a new connection, oldest
        first: the replies to what went on the old one are lost with its reply queue.

        ``unanswered``: the new connection is for calls that got no answer; their timers are
        set again as they are published again.
        """
        self.prune(now)
        if unanswered:
            self._timers.clear()
        sent = self._sent.values()
        return [e.item for e in sent if e.published and e.item.deadline > now and e.repeatable]
