"""The broker link: connect with back-off, give up at a deadline or a stop, start afresh.

Every attempt of one link, whoever makes it (a connect, a reconnect, a publish that finds the
connection lost), shares one :class:`~bus_tasks.transport.backoff.Backoff`: attempts come 0.1 s
doubling to ``reconnect_max_s`` apart, and an outage logs a bounded number of lines. A broker
that refuses the login or the vhost raises ``BrokerRefused`` at once: retrying would not help.

A URL may name several nodes of one cluster (``amqp://a;amqp://b;amqp://c``): each failed
attempt, and each connection lost, moves the link to the next node (round robin). The link keeps
the list itself and makes a connection to one node at a time: kombu's own failover moves on only
inside its retry loop, which the shared back-off replaces.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from kombu.connection import Connection
from kombu.exceptions import OperationalError

from bus_tasks.broker_login import NO_LOGIN, BrokerLogin
from bus_tasks.errors import BrokerRefused, ShutdownRequested
from bus_tasks.transport.backoff import Backoff
from bus_tasks.transport.kombu import frames
from bus_tasks.transport.kombu.schemes import REDIS_SCHEMES, refusal, transport_class, transport_options
from bus_tasks.urls import broker_urls, redact_url

log = logging.getLogger("bus_tasks.transport")

Retries = int | Literal["default"] | None


def describe(exc: BaseException | None) -> str:
    """One line for a connection failure (kombu's wrappers say little beyond their cause)."""
    if exc is None:
        return "no attempt made"
    return str(exc) or type(exc).__name__


class Link:
    """One kombu connection to one node of the URL, replaced by one to the next node after it is
    lost or an attempt failed (:meth:`renew`)."""

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
        login: BrokerLogin = NO_LOGIN,
    ) -> None:
        self.url = url
        self.nodes = broker_urls(url) or [url]
        self.node = 0  # the index in nodes of the one connected to, or tried next
        self.scheme = url.split("://", 1)[0]
        self.is_amqp = self.scheme in ("amqp", "amqps", "pyamqp")
        tls = login.ssl_options() if self.is_amqp else None
        self._connection_options: dict[str, Any] = {
            "heartbeat": heartbeat_s if self.is_amqp else 0,
            "transport_options": transport_options(url, redis_key_prefix=redis_key_prefix),
            "transport": transport_class(self.scheme),
            "login_method": login.method if self.is_amqp else None,
            **({"ssl": tls} if tls is not None else {}),
        }
        self.conn = self._connection(connect_timeout_s)
        self.heartbeat_s = heartbeat_s
        self.connect_retries = connect_retries
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_max_s = reconnect_max_s
        self.backoff = Backoff(max_s=reconnect_max_s)
        self.last_error: BaseException | None = None  # of the current outage
        self.closed_with: BaseException | None = None  # see drain_events
        self.ever_connected = False
        self.refused: BrokerRefused | None = None  # for good: no attempt is made any more
        self._stop = stop  # once set, waiting for the broker gives up with ShutdownRequested
        self._deadline: float | None = None  # see bounded()
        self._last_heartbeat = 0.0

    def __repr__(self) -> str:
        return redact_url(self.url)

    @property
    def node_url(self) -> str:
        """The URL of the node connected to, or tried next."""
        return self.nodes[self.node]

    def _connection(self, connect_timeout_s: float) -> Connection:
        return Connection(self.node_url, connect_timeout=connect_timeout_s, **self._connection_options)

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions that mean the connection or channel was lost."""
        return (
            *self.conn.connection_errors,
            *self.conn.channel_errors,
            OperationalError,  # kombu's wrapper when reconnecting gave up
        )

    @property
    def lost_errors(self) -> tuple[type[BaseException], ...]:
        """Those of :attr:`errors` that mean the connection itself was lost (not a channel refused)."""
        return (*self.conn.connection_errors, OperationalError)

    @property
    def lost(self) -> bool:
        """True when the AMQP connection made was lost (a read or a write failed), not yet renewed."""
        connection = getattr(self.conn, "_connection", None) if self.is_amqp else None
        return connection is not None and not connection.connected

    def _unless_lost(self) -> None:
        """A lost connection raises (one of :attr:`lost_errors`) rather than be used: kombu would
        connect again in place on its next use (a read, a channel, a connect), to the same node,
        without the consumers a recovery restores, and drop the lost socket unclosed."""
        if self.lost:
            raise ConnectionError(f"the connection to {redact_url(self.node_url)} was lost")

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

    @property
    def gave_up(self) -> bool:
        """True when more than ``connect_retries`` attempts in a row failed."""
        return self.backoff.exhausted(self.connect_retries)

    def due(self) -> bool:
        """True when the back-off allows the next attempt now."""
        return self.backoff.wait_s(time.monotonic()) <= 0

    def connect(self, max_retries: Retries = "default", *, settle: bool = True) -> None:
        """Connect now unless connected, waiting out the back-off between attempts.

        Without ``settle`` the outage is not over once connected: a reconnect whose restoring
        fails (consumers refused right after the connect) goes on backing off, and logging at
        its doublings, until the caller says it :meth:`succeeded` (not a line per attempt).

        Gives up once more than ``max_retries`` attempts in a row failed (``connect_retries``
        by default; None: never), counting those of earlier calls, so a later call makes one
        attempt; or at the deadline of :meth:`bounded`.

        Raises:
            BrokerRefused: when the broker refuses the login or the vhost (not retried).
            one of :attr:`errors`: the last attempt's error, when giving up; at once when
                the connection made was lost (:attr:`lost`: :meth:`renew` it first).
        """
        retries = self.connect_retries if max_retries == "default" else max_retries
        self._unless_lost()
        while not self.conn.connected:
            if self.refused is not None:
                raise self.refused
            self._wait_turn()
            try:
                self._attempt()
            except self.errors as exc:
                self.renew()  # a half-made connection (a Redis login that failed) is not reused
                reason = refusal(exc)
                if reason is not None:
                    self.refused = BrokerRefused(redact_url(self.url), reason)
                    raise self.refused from exc
                self.failed(exc, retries=retries)
                if self.backoff.exhausted(retries) or self.past_deadline():
                    raise
                continue
            if settle:
                self.succeeded()

    def _wait_turn(self) -> None:
        """Sleep until the back-off allows an attempt; at the deadline, give up with the last error."""
        self.check_stop()
        now = time.monotonic()
        wait_s = self.backoff.wait_s(now)
        if wait_s <= 0:
            return
        if self._deadline is not None and now + wait_s >= self._deadline:
            self.pause(self._deadline - now)  # the call fails at its deadline, not earlier
            self.check_stop()
            if self.last_error is not None:
                raise self.last_error
            raise TimeoutError(f"broker {redact_url(self.url)} not reached before the deadline")
        self.pause(wait_s)
        self.check_stop()

    def _attempt(self) -> None:
        remaining = self.remaining()
        # One attempt must not outlast the deadline either (a host that drops SYNs).
        attempt_s = self.connect_timeout_s if remaining is None else min(self.connect_timeout_s, remaining)
        self.conn.connect_timeout = attempt_s  # type: ignore[assignment]  # typed int, takes seconds
        # One attempt (kombu's own retry loop would not share the back-off), raw errors.
        self.conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        if self.scheme in REDIS_SCHEMES:
            channel: Any = self.conn.default_channel
            channel.client.ping()  # the login happens at the first command

    def failed(self, exc: BaseException, *, retries: int | None = None) -> None:
        """Count a failed attempt (connecting, or restoring after it); log it if it is due a line
        (the last one of ``retries`` always is)."""
        self.last_error = exc
        now = time.monotonic()
        due = self.backoff.failed(now)
        backoff = self.backoff
        if retries is not None and backoff.failures == retries + 1 > 1:  # the attempt that spent them
            log.warning(
                "broker %s unreachable after %d attempts in %.1fs: %s; giving up",
                redact_url(self.node_url), backoff.failures, backoff.outage_s(now), describe(exc),
            )  # fmt: skip
        elif not due:
            return
        elif backoff.failures == 1:
            log.warning(
                "broker %s unreachable: %s; retrying %.1fs doubling to %gs apart",
                redact_url(self.node_url), describe(exc), backoff.delay_s, backoff.max_s,
            )  # fmt: skip
        else:
            log.warning(
                "broker %s still unreachable after %d attempts in %.0fs: %s; next in %.1fs",
                redact_url(self.node_url), backoff.failures, backoff.outage_s(now), describe(exc),
                backoff.delay_s,
            )  # fmt: skip

    def succeeded(self) -> None:
        failures = self.backoff.succeeded()
        self.last_error = None
        self.ever_connected = True
        if failures:
            log.info(
                "broker %s reachable again after %d failed attempts", redact_url(self.node_url), failures
            )

    def renew(self) -> None:
        """Drop the lost connection and make a fresh one (not yet connected) to the next node.

        Called after a failed attempt and when a connection was lost: with one node, the same
        node again; with several, the next (the lost one may be down for as long as it takes).
        """
        try:
            self.conn.collect()
        except Exception:  # the old connection is gone either way
            log.debug("collecting the old connection failed", exc_info=True)
        previous = self.node
        self.node = (self.node + 1) % len(self.nodes)
        if self.node != previous:
            log.debug(
                "broker link moves from %s to %s", redact_url(self.nodes[previous]), redact_url(self.node_url)
            )
        self.conn = self._connection(self.connect_timeout_s)

    @property
    def channel(self) -> Any:
        """The connection's default channel (connects first if needed)."""
        self._unless_lost()
        return self.conn.default_channel

    def new_channel(self) -> Any:
        self._unless_lost()
        return self.conn.channel()

    def drain_events(self, timeout_s: float) -> bool:
        """Read what the broker sent within ``timeout_s`` (callbacks only queue it); False if nothing."""
        self._unless_lost()
        self._heartbeat_check()
        try:
            self.conn.drain_events(timeout=timeout_s)
        except TimeoutError:
            return False
        except Exception as exc:
            self.closed_with = exc  # the sender reads why: a refused publish is not re-sent
            raise
        return True

    def _heartbeat_check(self) -> None:
        """Send and check AMQP heart-beats, at most once a second (it may write: socket blocking)."""
        if self.is_amqp:
            now = time.monotonic()
            if now - self._last_heartbeat >= 1.0:
                self.conn.heartbeat_check()
                self._last_heartbeat = now

    def drain_ready(self, more: Callable[[], bool]) -> bool:
        """Read what the broker has sent already, without waiting, while ``more()`` and something
        was there (callbacks only queue it); False when nothing was.

        On AMQP the socket is made non-blocking once for the whole loop and read in chunks
        (:func:`~bus_tasks.transport.kombu.frames.read_ready`), not by py-amqp, whose reads
        with a time-out of their own (``drain_events(0)``) take three reads a frame and make the
        socket non-blocking and back for each: two system calls a frame, six a message, a tenth
        of an aggregator's ingest CPU, and most of a front door's reading of a lone reply. On
        Redis it reads nothing (see below).

        Raises:
            the transport's connection errors, as :meth:`drain_events`.
        """
        if self.scheme in REDIS_SCHEMES:
            # The read before took up to the prefetch room of the queue it served (redis_tuning's
            # RPOP after the BRPOP); another queue's messages come at the next drain, at once. One
            # more read is a whole kombu poll of every channel: 50-70 us of CPU that mostly finds
            # nothing, paid by each request and each reply (docs/performance.md, round 3).
            return False
        amqp_conn: Any = getattr(self.conn, "_connection", None) if self.is_amqp else None
        if getattr(amqp_conn, "sock", None) is None:
            got = False
            while more() and self.drain_events(0):
                got = True
            return got
        if not more():
            return False
        self._unless_lost()
        self._heartbeat_check()
        before = amqp_conn.bytes_recv  # py-amqp's count of frames, which read_ready keeps too
        try:
            frames.read_ready(amqp_conn, more)
        except Exception as exc:
            self.closed_with = exc  # as drain_events
            raise
        return bool(amqp_conn.bytes_recv != before)

    def fileno(self) -> int | None:
        """The AMQP socket's descriptor while connected; None otherwise (or on other brokers)."""
        if not self.is_amqp:
            return None
        sock = getattr(getattr(self.conn, "_connection", None), "sock", None)
        try:
            return None if sock is None else int(sock.fileno())
        except OSError:
            return None

    def take_closed_with(self) -> BaseException | None:
        """The error the last read ended with (a channel or connection close), once."""
        closed, self.closed_with = self.closed_with, None
        return closed

    def release(self) -> None:
        self.conn.release()
