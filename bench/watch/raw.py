"""The raw kombu paths of the watch latency figure (its baseline and controls), and the
:class:`Arrivals` every receiving side of that figure, the watcher too, reports to."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from bench.harness import check
from bus_tasks import codec

SAMPLE_TIMEOUT_S = 10.0
RAW_EXCHANGE = "bench.watch.raw"


class Arrivals:
    """What the receiving side saw: (``perf_counter``, marker), in arrival order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[float, str]] = queue.Queue()

    def put(self, marker: str) -> None:
        self._queue.put((time.perf_counter(), marker))

    def wait(self, marker: str) -> float:
        """When ``marker`` arrived (earlier markers, all late or warm-up, are passed over)."""
        deadline = time.monotonic() + SAMPLE_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            try:
                at, seen = self._queue.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise TimeoutError(f"{marker!r} not received within {SAMPLE_TIMEOUT_S:g}s") from None
            if seen == marker:
                return at


class RawPath:
    """A raw kombu consumer (a thread, its own connection) of ``queue`` and a raw producer to it."""

    def __init__(
        self, url: str, entity: Queue, *, prefetch: int | None = None, send_key: str | None = None
    ) -> None:
        """``send_key``: publish with this routing key (a relay's input) instead of ``entity``'s."""
        self.arrivals = Arrivals()
        self.entity = entity
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._consumer_conn = Connection(url)
        self._thread = threading.Thread(target=self._consume, args=(prefetch,), name="raw", daemon=True)
        self._thread.start()
        if not self._ready.wait(30.0):
            raise TimeoutError("the raw consumer did not start within 30s")
        check(self.error is None, f"the raw consumer failed: {self.error!r}")
        self._producer_conn = Connection(url)
        self._producer = Producer(self._producer_conn.channel())
        self._exchange = entity.exchange
        self._routing_key = send_key if send_key is not None else entity.routing_key

    def _consume(self, prefetch: int | None) -> None:
        def on_message(message: Message) -> None:
            self.arrivals.put(str(codec.loads(message.body)["m"]))
            message.ack()

        try:
            with Consumer(
                self._consumer_conn.channel(), [self.entity], on_message=on_message, prefetch_count=prefetch
            ):
                self._ready.set()
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError, socket.timeout):
                        self._consumer_conn.drain_events(timeout=0.2)
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def sender(self, size: int) -> Callable[[str], None]:
        """Publishes a persistent JSON body of ``size`` bytes carrying the marker."""

        def send(marker: str) -> None:
            head = codec.dumps({"m": marker, "pad": ""})
            body = codec.dumps({"m": marker, "pad": "x" * max(0, size - len(head))})
            self._producer.publish(
                body,
                exchange=self._exchange,
                routing_key=self._routing_key,
                content_type="application/json",
                content_encoding="binary",
                delivery_mode=2,
            )

        return send

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._producer_conn.release()
        self._consumer_conn.release()
        check(self.error is None, f"the raw consumer failed: {self.error!r}")


def raw_queue() -> Queue:
    exchange = Exchange(RAW_EXCHANGE, type="direct", durable=True)
    return Queue("bench.watch.raw.queue", exchange, routing_key="queue", durable=True)


def raw_stream(name: str = "stream") -> Queue:
    exchange = Exchange(RAW_EXCHANGE, type="direct", durable=True)
    return Queue(
        f"bench.watch.raw.{name}",
        exchange,
        routing_key=name,
        durable=True,
        queue_arguments={"x-queue-type": "stream"},
        consumer_arguments={"x-stream-offset": "next"},
    )


def relayed_queue() -> Queue:
    """Where :class:`Relay` republishes: a transient queue, as a watch queue is."""
    exchange = Exchange(RAW_EXCHANGE, type="direct", durable=True)
    return Queue("bench.watch.raw.relayed", exchange, routing_key="relayed", durable=False, auto_delete=True)


class Relay:
    """In a child process: raw kombu reads its own stream and republishes each body (transient)
    to :func:`relayed_queue`: the two hops of the watch path, with nothing done in between."""

    def __init__(self, url: str) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._conn = Connection(url)
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(30.0):
            raise TimeoutError("the relay did not start within 30s")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            out = relayed_queue()
            producer = Producer(self._conn.channel())
            out.bind(producer.channel).declare()

            def on_message(message: Message) -> None:
                producer.publish(
                    message.body,
                    exchange=out.exchange,
                    routing_key=out.routing_key,
                    content_type="application/json",
                    content_encoding="binary",
                    delivery_mode=1,
                )
                message.ack()

            with Consumer(
                self._conn.channel(), [raw_stream("relay")], on_message=on_message, prefetch_count=64
            ):
                self._ready.set()
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError, socket.timeout):
                        self._conn.drain_events(timeout=0.2)
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._conn.release()
        if self.error is not None:
            raise self.error
