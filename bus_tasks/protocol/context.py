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
    it did not say.
    """

    identity: str | None = None
    door: Door = "local"
    deadline: float | None = None


LOCAL = CallContext()
"""A call made in the same process, by nobody in particular, without a deadline."""
