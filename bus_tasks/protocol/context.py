"""Who calls, through which door, until when: what the aggregator knows of every RPC call
beside its method and params (SPEC sections 15 and 16). No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Door = Literal["amqp", "stomp", "http", "local"]
"""Where a call came in: the RPC queue (``amqp``, whatever the broker), a front door that says it
bridged the call (``stomp``, ``http``), or the same process (``local``: tools, tests, benches)."""


@dataclass(frozen=True, slots=True)
class CallContext:
    """One call's circumstances, as far as they are known where it is served.

    ``identity``: who calls, when known: on AMQP the request's ``user_id`` property, which
    RabbitMQ validates against the connection's login (other brokers do not: whether to believe
    it is the policy's to decide); None for an anonymous call. ``deadline``: epoch seconds after
    which the caller no longer waits (the request's expiration from when it was sent); None when
    it did not say. ``correlation_id``: the request's, which its caller keeps when it sends the
    request again; ``resent``: the caller says it sent this request before (SPEC 17).
    """

    identity: str | None = None
    door: Door = "local"
    deadline: float | None = None
    correlation_id: str | None = None
    resent: bool = False

    def call_key(self, request_id: object) -> str | None:
        """The name of one call across its caller's re-sends: who, which request, which member
        (its JSON-RPC id); None for a call that cannot be told from another (no correlation id,
        or a notification). A repeated stop, revert, retag or clear is answered as the first was."""
        if self.correlation_id is None or request_id is None:
            return None
        return f"{self.identity or ''}/{self.correlation_id}/{request_id!r}"


LOCAL = CallContext()
"""A call made in the same process, by nobody in particular, without a deadline."""
