"""Exclusive consumers where the broker has none: memory:// and Redis emulate ``exclusive``.

A connection claims the queue before it consumes:

- RabbitMQ: an exclusive queue ``bus_tasks.claim.<queue>`` that the connection declares and the
  broker lets no other connection declare (405 RESOURCE_LOCKED) until this one closes or dies.
  basic.consume's own ``exclusive`` is passed too, but quorum queues (RabbitMQ 3.10) do not
  enforce it; the lock queue works whatever the queue's type.
- memory://: a process-wide registry of claimed queue names (kombu's memory broker lives in the
  process too, so every connection to it sees the same registry); released at close and by
  :func:`~bus_tasks.transport.reset_memory_transport`.
- Redis: a lease key ``<redis_key_prefix>bus_tasks.exclusive.<queue>`` holding the connection's
  token, taken with ``SET NX PX``, renewed while the connection drains, deleted at close. A
  process that dies without closing holds the queue until its lease runs out (``LEASE_S``); one
  that stops draining for longer than that loses it.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from amqp.exceptions import ResourceLocked

from bus_tasks.errors import QueueInUse
from bus_tasks.transport.kombu import entities

LEASE_S = 10.0
RENEW_EVERY_S = LEASE_S / 4

_memory_lock = threading.Lock()
_memory_claims: dict[str, str] = {}  # queue -> token of the connection that consumes it


def reset_memory_claims() -> None:
    """Forget every memory:// claim (with the memory broker's own state, between tests)."""
    with _memory_lock:
        _memory_claims.clear()


class Claims:
    """The queues one connection consumes exclusively."""

    def __init__(self, scheme: str, *, redis_key_prefix: str = "") -> None:
        self.kind = "memory" if scheme == "memory" else "redis" if scheme in ("redis", "rediss") else "amqp"
        self.token = uuid.uuid4().hex  # kept across reconnects: the lease stays this connection's
        self._prefix = redis_key_prefix
        self._queues: list[str] = []
        self._renewed_at = 0.0

    @property
    def held(self) -> bool:
        """True while this connection claims a queue."""
        return bool(self._queues)

    def claim(self, channel: Any, queue: str) -> None:
        """Take ``queue`` for this connection (again after a reconnect: it is still ours).

        Raises:
            QueueInUse: when another connection holds it.
        """
        if self.kind == "amqp":
            # ``channel``: a channel of its own (the broker closes it when it refuses the lock).
            try:
                entities.claim_queue(queue).bind(channel).declare()
            except ResourceLocked:
                raise QueueInUse(queue) from None
        elif self.kind == "memory":
            with _memory_lock:
                if _memory_claims.setdefault(queue, self.token) != self.token:
                    raise QueueInUse(queue)
        elif self.kind == "redis":
            client, key = _redis(channel), self._key(queue)
            if not self._take(client, key) and not self._extend(client, key):
                raise QueueInUse(queue)
            self._renewed_at = time.monotonic()
        if queue not in self._queues:
            self._queues.append(queue)

    def renew(self, channel: Any) -> None:
        """Extend the Redis leases when due (called while draining).

        Raises:
            QueueInUse: when a lease ran out and another connection took the queue meanwhile.
        """
        if self.kind != "redis" or not self._queues:
            return
        now = time.monotonic()
        if now - self._renewed_at < RENEW_EVERY_S:
            return
        client = _redis(channel)
        for queue in self._queues:
            key = self._key(queue)
            if not self._extend(client, key) and not self._take(client, key):
                self._queues.remove(queue)
                raise QueueInUse(queue)
        self._renewed_at = now

    def release(self, channel: Any) -> None:
        """Give up every claim of this connection (at close; on RabbitMQ, closing it is enough)."""
        queues, self._queues = self._queues, []
        if self.kind == "memory":
            with _memory_lock:
                for queue in queues:
                    if _memory_claims.get(queue) == self.token:
                        del _memory_claims[queue]
        elif self.kind == "redis" and queues:
            client = _redis(channel)
            for queue in queues:
                self._if_ours(client, self._key(queue), lambda pipe, key: pipe.delete(key))

    def _key(self, queue: str) -> str:
        return f"{self._prefix}bus_tasks.exclusive.{queue}"

    def _take(self, client: Any, key: str) -> bool:
        return bool(client.set(key, self.token, nx=True, px=int(LEASE_S * 1000)))

    def _extend(self, client: Any, key: str) -> bool:
        return self._if_ours(client, key, lambda pipe, k: pipe.pexpire(k, int(LEASE_S * 1000)))

    def _if_ours(self, client: Any, key: str, change: Any) -> bool:
        """Apply ``change`` to ``key`` if it still holds this connection's token (WATCH/MULTI)."""
        from redis.exceptions import WatchError  # noqa: PLC0415 - see _redis

        with client.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != self.token.encode():
                    return False
                pipe.multi()
                change(pipe, key)
                pipe.execute()
                return True
            except WatchError:  # it changed under us: no longer ours
                return False


def _redis(channel: Any) -> Any:
    """A plain client on the kombu Redis channel's pool (its own client prefixes some keys only)."""
    # Imported here: every connection imports this module, and redis-py is 0.1-0.3 s of an AMQP
    # process's start (a tenth of serve's fixed cost, docs/performance.md) that it never uses.
    import redis  # noqa: PLC0415

    return redis.Redis(connection_pool=channel.client.connection_pool)
