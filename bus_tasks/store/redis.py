"""A store in Redis: the view outlives the aggregator's host; a write never goes back in ``seq``."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis

from bus_tasks import codec, names
from bus_tasks.config import DEFAULT_CONNECT_TIMEOUT_S
from bus_tasks.core.view import Entry, TaskView, Tombstone
from bus_tasks.errors import StoreUnavailable
from bus_tasks.store.base import BufferedStore
from bus_tasks.store.form import STORED_FORM, check_form, entry_from_details

log = logging.getLogger(__name__)

T = TypeVar("T")

SEQ_DIGITS = 20
MAX_SEQ = 10**SEQ_DIGITS - 1
BATCH = 500  # ids per command or script call, so one call never holds Redis for long

# KEYS: tasks hash, tombstones hash. ARGV: id, payload, id, payload, ...
# A payload starts with its seq in SEQ_DIGITS zero-padded digits, so comparing those prefixes
# as strings orders by seq; Lua numbers are doubles and would round seqs above 2**53.
# A tombstone wins over any put: a writer that missed the clear cannot bring the task back.
_PUT_IF_NEWER = f"""
local written = 0
for i = 1, #ARGV, 2 do
    local id, payload = ARGV[i], ARGV[i + 1]
    if redis.call('HEXISTS', KEYS[2], id) == 0 then
        local current = redis.call('HGET', KEYS[1], id)
        if not current or string.sub(current, 1, {SEQ_DIGITS}) < string.sub(payload, 1, {SEQ_DIGITS}) then
            redis.call('HSET', KEYS[1], id, payload)
            written = written + 1
        end
    end
end
return written
"""


class RedisStore(BufferedStore):
    """The view in two Redis hashes under ``key_prefix``; safe for overlapping writers.

    A replacement aggregator (on another host) loads what its predecessor wrote; while both
    write (the old one flushing as the new one starts), a write never goes back in ``seq``
    and a tombstone always wins. Only one aggregator per broker consumes events at a time.

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``rediss://``, ``unix://``).
        key_prefix: prefix of both keys, so deployments can share one Redis.
        connect_timeout_s: how long to wait for a connection (a reply: at least 10 s).
    """

    max_seq = MAX_SEQ

    def __init__(
        self, url: str, key_prefix: str, *, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ) -> None:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout_s, socket_timeout=max(connect_timeout_s, 10.0)
        )
        self._setup(client, key_prefix, _describe_url(url))

    @classmethod
    def from_client(cls, client: redis.Redis, key_prefix: str) -> RedisStore:
        """A store on an existing client (e.g. ``fakeredis.FakeRedis``); its close() closes the client."""
        store = cls.__new__(cls)
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        store._setup(client, key_prefix, f"{where}/{kwargs.get('db', 0)}")
        return store

    def _setup(self, client: redis.Redis, key_prefix: str, where: str) -> None:
        self._client = client
        self.key_prefix = key_prefix
        self.tasks_key = key_prefix + names.STORE_TASKS_KEY
        self.tombstones_key = key_prefix + names.STORE_TOMBSTONES_KEY
        self.meta_key = key_prefix + names.STORE_META_KEY
        self._where = where  # never the password
        self._put_if_newer = client.register_script(_PUT_IF_NEWER)
        BufferedStore.__init__(self)

    def __str__(self) -> str:
        return f"redis {self._where} prefix {self.key_prefix}"

    __repr__ = __str__

    def load(self, view: TaskView) -> int:
        """Fill ``view`` from Redis; returns the number of live tasks loaded.

        Raises:
            StoreUnavailable: when Redis cannot be reached or refuses.
        """
        try:
            return self._load(view)
        except redis.RedisError as exc:
            raise StoreUnavailable(str(self), f"load: {exc}") from exc

    def _load(self, view: TaskView) -> int:
        found = self._client.hget(self.meta_key, "form")
        check_form(None if found is None else int(found), str(self))
        self._client.hset(self.meta_key, "form", STORED_FORM)
        before = len(view)
        for task_id, value in self._scan(self.tombstones_key):
            fields = codec.loads(value)
            tombstone = Tombstone(
                subsystem=fields["subsystem"], seq=fields["seq"], cleared_at=fields["cleared_at"]
            )
            view.restore_tombstone(_text(task_id), tombstone)
        view.restore_all(self._entries())
        revision = self._client.hget(self.meta_key, "revision")
        if revision is not None:
            view.revision = max(view.revision, int(revision))
        return len(view) - before

    def _entries(self) -> Iterator[Entry]:
        for _, value in self._scan(self.tasks_key):
            payload = _bytes(value)
            yield entry_from_details(payload[SEQ_DIGITS + 1 :], int(payload[:SEQ_DIGITS]))

    def _scan(self, key: str) -> Iterator[tuple[Any, Any]]:
        # HSCAN rather than HGETALL: a large view does not block Redis in one reply.
        return self._client.hscan_iter(key, count=1000)

    def commit(self) -> None:
        """Send the buffer in one MULTI/EXEC; on failure it stays buffered.

        Raises:
            StoreUnavailable: when Redis cannot be reached or refuses (retrying is safe: a put
                never goes back in ``seq`` and a tombstone always wins).
        """
        if not self._buffer:
            return
        try:
            self._commit()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(self), f"commit: {exc}") from exc
        self._buffer.clear()

    def _commit(self) -> None:
        buried = self._buffer.buried()
        forgotten = self._buffer.forgotten()
        puts: list[bytes | str] = []
        for entry in self._buffer.puts.values():
            puts += [entry.id, b"%0*d:%b" % (SEQ_DIGITS, entry.seq, entry.details)]
        pipe = self._client.pipeline(transaction=True)
        for chunk in _chunks(buried):
            pipe.hset(
                self.tombstones_key,
                mapping={
                    i: codec.dumps({"subsystem": t.subsystem, "seq": t.seq, "cleared_at": t.cleared_at})
                    for i, t in chunk
                },
            )
            pipe.hdel(self.tasks_key, *(i for i, _ in chunk))
        for ids in _chunks(forgotten):
            pipe.hdel(self.tombstones_key, *ids)
        for args in _chunks(puts, 2 * BATCH):
            self._put_if_newer(keys=[self.tasks_key, self.tombstones_key], args=args, client=pipe)
        if self._buffer.revision is not None:
            # One store per replica (its own key prefix): the position is this replica's.
            pipe.hset(self.meta_key, "revision", self._buffer.revision)
        pipe.execute()

    def close(self) -> None:
        """Close the client; writes not committed are dropped (their events were not acked)."""
        if self._buffer:
            log.info("%s closed with %d uncommitted writes", self, len(self._buffer))
        self._client.close()


def _chunks(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _describe_url(url: str) -> str:
    """``host:port/db`` (or the socket path) of a Redis URL: what a log line may show."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    db = parts.path.strip("/") or "0"
    return f"{host}:{port}/{db}"
