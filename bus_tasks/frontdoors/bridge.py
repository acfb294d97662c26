"""One thread that owns the front door's broker connection: requests out, replies back by callback."""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bus_tasks import names
from bus_tasks.transport import Bus, Delivery

log = logging.getLogger(__name__)

# The connection is not thread-safe: the bridge waits on the broker socket and on a wake-up
# socket that ``submit`` writes to, so a new request is published at once. Without a socket to
# select on (memory://, redis://), it polls in short turns.
TURN_S = 0.05
POLL_TURN_S = 0.001
IDLE_DRAIN_S = 0.001

OnReply = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request to publish on ``bus_tasks.rpc``."""

    body: bytes
    correlation_id: str
    deadline: float  # monotonic


class RpcBridge:
    """Publishes requests to ``bus_tasks.rpc`` and hands each reply to ``on_reply`` (in its thread)."""

    def __init__(self, connection: Bus, on_reply: OnReply) -> None:
        self.connection = connection
        self._on_reply = on_reply
        self._outgoing: queue.SimpleQueue[Outgoing] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._reply_queue = ""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="stomp-bridge", daemon=True)

    def start(self, timeout_s: float | None = None) -> None:
        """Start the thread; return once the reply queue is consumed.

        Raises:
            the error that stopped the bridge before it was ready; TimeoutError at ``timeout_s``.
        """
        self._thread.start()
        while not self._ready.wait(0.05):
            if not self._thread.is_alive():
                break
            if timeout_s is not None:
                timeout_s -= 0.05
                if timeout_s <= 0:
                    raise TimeoutError("the broker connection was not ready in time")
        if self._error is not None:
            raise self._error

    def submit(self, body: bytes, correlation_id: str, deadline: float) -> None:
        """Queue a request for the bridge thread (thread-safe)."""
        self._outgoing.put(Outgoing(body, correlation_id, deadline))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"w")

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _handle(self, delivery: Delivery) -> None:
        if delivery.correlation_id is None:
            log.debug("reply without correlation id dropped")
            return
        self._on_reply(delivery.correlation_id, delivery.body)

    def _run(self) -> None:
        conn = self.connection
        try:
            conn.connect()
            self._reply_queue = conn.declare_reply_queue(names.REPLY_QUEUE_PREFIX)
            conn.consume(self._reply_queue, self._handle, no_ack=True)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    self._turn()
                except conn.errors as exc:
                    log.warning("broker connection lost (%s); recovering", exc)
                    conn.recover()
        except Exception:
            log.exception("the stomp bridge stopped")
        finally:
            conn.close()
            self._wake_r.close()
            self._wake_w.close()

    def _turn(self) -> None:
        self._publish_queued()
        fd = self.connection.fileno()
        if fd is None:
            self.connection.drain(POLL_TURN_S)
            return
        wake = self._wake_r.fileno()
        readable, _, _ = select.select([fd, wake], [], [], TURN_S)
        if wake in readable:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
        if fd in readable:
            self.connection.drain(TURN_S)  # returns once the frame that is there is read
        elif not readable:
            self.connection.drain(IDLE_DRAIN_S)  # keeps the AMQP heart-beats going

    def _publish_queued(self) -> None:
        now = time.monotonic()
        while True:
            try:
                item = self._outgoing.get_nowait()
            except queue.Empty:
                return
            remaining = item.deadline - now
            if remaining <= 0:
                continue  # its caller has been answered with a timeout already
            self.connection.publish(
                item.body,
                routing_key=names.RPC_QUEUE,
                reply_to=self._reply_queue,
                correlation_id=item.correlation_id,
                expiration_s=remaining,
                headers={names.HEADER_SENT_AT: time.time()},
                persistent=False,
            )
