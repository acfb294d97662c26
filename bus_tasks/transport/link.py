"""The broker link: connect with back-off, give up at a deadline or a stop, start afresh."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from kombu.connection import Connection
from kombu.exceptions import OperationalError

from bus_tasks.config import redact_url
from bus_tasks.errors import ShutdownRequested

log = logging.getLogger("bus_tasks.transport")

Retries = int | Literal["default"] | None


def transport_options(url: str, *, redis_key_prefix: str = "") -> dict[str, Any]:
    scheme = url.split("://", 1)[0]
    if scheme == "memory":
        return {"polling_interval": 0.002}
    if scheme in ("redis", "rediss"):
        options: dict[str, Any] = {"polling_interval": 0.05}
        if redis_key_prefix:
            options["global_keyprefix"] = redis_key_prefix
        return options
    return {}


class Link:
    """One kombu connection, replaced by a fresh clone after it is lost (:meth:`renew`)."""

    def __init__(
        self,
        url: str,
        *,
        heartbeat_s: float,
        connect_timeout_s: float,
        connect_retries: int | None,
        redis_key_prefix: str,
        reconnect_max_s: float,
        stop: threading.Event | None,
    ) -> None:
        self.url = url
        self.is_amqp = url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")
        self.conn = Connection(
            url,
            heartbeat=heartbeat_s if self.is_amqp else 0,
            connect_timeout=connect_timeout_s,
            transport_options=transport_options(url, redis_key_prefix=redis_key_prefix),
        )
        self.connect_retries = connect_retries
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_max_s = reconnect_max_s
        self._stop = stop  # once set, waiting for the broker gives up with ShutdownRequested
        self._deadline: float | None = None  # see bounded()
        self._last_heartbeat = 0.0

    def __repr__(self) -> str:
        return redact_url(self.url)

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection or channel was lost."""
        return (
            *self.conn.connection_errors,
            *self.conn.channel_errors,
            OperationalError,  # kombu's wrapper when reconnecting gave up
        )

    # -- deadlines and stops --------------------------------------------------------------

    @contextmanager
    def bounded(self, deadline: float) -> Iterator[None]:
        """Within the block, waiting for the broker gives up at ``deadline`` (``time.monotonic()``)."""
        outer = self._deadline
        self._deadline = deadline if outer is None else min(outer, deadline)
        try:
            yield
        finally:
            self._deadline = outer

    def remaining(self) -> float | None:
        """Seconds left before the deadline of :meth:`bounded` (at least one attempt's worth)."""
        if self._deadline is None:
            return None
        return max(self._deadline - time.monotonic(), 0.001)

    def past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise ShutdownRequested(f"stopped while waiting for {redact_url(self.url)}")

    def pause(self, seconds: float) -> None:
        """Back off between attempts; a stop cuts it short."""
        if self._stop is not None:
            self._stop.wait(seconds)
        else:
            time.sleep(seconds)

    # -- connecting -----------------------------------------------------------------------

    def connect(self, max_retries: Retries = "default") -> None:
        """Connect now, retrying with back-off (forever unless ``connect_retries`` was given, or
        until the deadline of :meth:`bounded`)."""
        remaining = self.remaining()
        # One attempt must not outlast the deadline either (a host that drops SYNs).
        attempt_s = self.connect_timeout_s if remaining is None else min(self.connect_timeout_s, remaining)
        self.conn.connect_timeout = attempt_s  # type: ignore[assignment]  # typed int, takes seconds
        self.conn.ensure_connection(
            errback=self._on_connect_error,
            max_retries=self.connect_retries if max_retries == "default" else max_retries,
            interval_start=0.1,
            interval_step=0.5,
            interval_max=self.reconnect_max_s,
            timeout=remaining,
        )

    def _on_connect_error(self, exc: BaseException, interval: float) -> None:
        self.check_stop()
        if self._deadline is not None and time.monotonic() + interval >= self._deadline:
            raise exc  # the next attempt would come after the deadline of bounded()
        log.warning("broker %s unreachable (%s); retrying in %.1fs", redact_url(self.url), exc, interval)

    def renew(self) -> None:
        """Drop the lost connection and make a fresh one (not yet connected)."""
        try:
            self.conn.collect()
        except Exception:  # the old connection is gone either way
            log.debug("collecting the old connection failed", exc_info=True)
        self.conn = self.conn.clone()

    @property
    def channel(self) -> Any:
        """The connection's default channel (connects first if needed)."""
        return self.conn.default_channel

    def new_channel(self) -> Any:
        return self.conn.channel()

    def drain_events(self, timeout_s: float) -> bool:
        """Read what the broker sent within ``timeout_s`` (callbacks only queue it); False if nothing."""
        if self.is_amqp:
            now = time.monotonic()
            if now - self._last_heartbeat >= 1.0:
                self.conn.heartbeat_check()
                self._last_heartbeat = now
        try:
            self.conn.drain_events(timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        self.conn.release()
