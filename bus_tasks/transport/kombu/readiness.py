"""Queues that exist but are not ready yet: waited for with back-off, never a reason to exit.

RabbitMQ refuses a consumer or a declare, closing only the channel, while a stream has no
replica on the node asked yet (just declared, or a replica catching up after a node rejoined),
while a quorum queue or a stream elects a leader, and while the node a durable classic queue
lives on is down. Each of these passes by itself in seconds (or when the node comes back):
the operation is tried again on a fresh channel, 0.1 s doubling to ``NOT_READY_MAX_S`` apart
(or the link's ``reconnect_max_s``, if less), until it works, the link's deadline passes or a
stop comes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from amqp.exceptions import ChannelError, ResourceError

from bus_tasks.transport.backoff import Backoff
from bus_tasks.transport.kombu.link import Link

log = logging.getLogger("bus_tasks.transport")

T = TypeVar("T")

HOME_NODE_DOWN = "is down or inaccessible"  # "home node '...' of durable queue '...' in vhost ..."

# At most this long between tries: the node is there, and each of these states passes in seconds
# (a stream's replica restarting after a leader change: 1-3 s on the cluster tests' nodes).
NOT_READY_MAX_S = 1.0

# What RabbitMQ says (3.10 to 3.13) when a queue it knows cannot serve yet.
NOT_READY_SIGNS = (
    "replica on the local node",  # a stream: "does not have a (running) replica on the local node"
    "running local replica",  # a stream consumed while its replica restarts after a leader change
    HOME_NODE_DOWN,  # a durable classic queue on a node that is down
    "no leader",  # a quorum queue or a stream while it elects one
    "leader not found",
    "timed out",  # a quorum queue's command not answered during an election
    "timeout",
)


# The channel closes the broker's refusals raise: 506 (a stream's replica restarting) is mapped
# by py-amqp to ResourceError, a connection error by its class, though only the channel closed.
REFUSALS = (ChannelError, ResourceError)


def not_ready(exc: BaseException) -> str | None:
    """Why the broker refused an operation on a queue that is not ready yet; None if that is not why."""
    if not isinstance(exc, REFUSALS):  # only the channel was closed: the connection serves on
        return None
    text = str(exc.reply_text or "")
    if any(sign in text for sign in NOT_READY_SIGNS):
        return f"{exc.code} {text}"
    return None


def when_ready(link: Link, what: str, operation: Callable[[], T]) -> T:
    """``operation()``, tried again while the broker says ``what`` is not ready yet.

    Raises:
        the broker's error: any other, or the last one at the link's deadline.
        ShutdownRequested: when the link's stop comes while waiting.
    """
    backoff = Backoff(max_s=min(link.reconnect_max_s, NOT_READY_MAX_S))
    while True:
        try:
            result = operation()
        except REFUSALS as exc:
            reason = not_ready(exc)
            if reason is None or link.past_deadline():
                raise
            now = time.monotonic()
            if backoff.failed(now):
                log.warning(
                    "%s is not ready yet (%s): trying again in %.1fs (%d attempts in %.1fs)",
                    what, reason, backoff.delay_s, backoff.failures, backoff.outage_s(now),
                )  # fmt: skip
            link.check_stop()
            remaining = link.remaining()
            wait_s = backoff.wait_s(now)
            link.pause(wait_s if remaining is None else min(wait_s, remaining))
            link.check_stop()
            continue
        if backoff.failures:
            log.info("%s is ready after %d attempts", what, backoff.failures + 1)
        return result
