"""Figure 3, query: ``getAllTasks()`` round trip over RabbitMQ against a raw kombu request/reply echo.

Both servers run in one child process on the same vhost, each in a thread of its own: the
aggregator (with a view built beforehand) and an echo server that answers every request with a
fixed payload of the size of the aggregator's reply. The calls, from this process, alternate
between the two.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
import uuid
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from bench import workload
from bench.harness import (
    UNPAGED_REPLY_BYTES,
    Child,
    Figure,
    at_most,
    check,
    fmt_bytes,
    fmt_time,
    median,
    rabbitmq_vhost,
    say,
    side_by_side,
    timed,
)
from bench.selectivity import reply_body
from bus_tasks import codec, names, transport
from bus_tasks.aggregator import Aggregator, AggregatorPolicy
from bus_tasks.aggregator import methods as rpc
from bus_tasks.client import TasksClient
from bus_tasks.core.view import TaskView
from bus_tasks.protocol import jsonrpc
from bus_tasks.protocol.methods import MethodName
from bus_tasks.testing import RunningAggregator

SIZES = ((1_000, 15), (10_000, 9), (100_000, 5))  # tasks, repetitions
QUICK_SIZES = ((500, 3), (2_000, 3))
ECHO_QUEUE = "bench.echo"
CALL_TIMEOUT_S = 120.0
GET_ALL = {"tags": None, "options": None}
_DEFAULT = Exchange("", type="direct")


class EchoServer:
    """Raw kombu: answers each request on ``bench.echo`` with ``payload``, to its ``reply_to``."""

    def __init__(self, url: str, payload: bytes) -> None:
        self.payload = payload
        self._url = url
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="echo", daemon=True)

    def _run(self) -> None:
        try:
            with Connection(self._url) as conn:
                channel = conn.channel()
                producer = Producer(channel)

                def on_message(message: Message) -> None:
                    producer.publish(
                        self.next_payload(),
                        routing_key=message.properties["reply_to"],
                        correlation_id=message.properties["correlation_id"],
                        content_type="application/json",
                        content_encoding="utf-8",
                        delivery_mode=1,
                    )
                    message.ack()

                queue = Queue(ECHO_QUEUE, _DEFAULT, routing_key=ECHO_QUEUE, auto_delete=True)
                with Consumer(channel, [queue], on_message=on_message, prefetch_count=64):
                    self._ready.set()
                    while not self._stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            conn.drain_events(timeout=0.2)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def next_payload(self) -> bytes:
        """What the next request is answered."""
        return self.payload

    def __enter__(self) -> EchoServer:
        self._thread.start()
        if not self._ready.wait(10.0) or self._error is not None:
            raise RuntimeError("the echo server did not start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)
        if self._error is not None:
            raise RuntimeError("the echo server failed") from self._error


class RawClient:
    """Raw kombu request/reply: publish one request, wait for the reply body (no JSON decoding).

    With kombu's defaults, py-amqp turns a body with a ``content_encoding`` into ``str`` (a
    UTF-8 pass over it). ``str_bodies=False`` turns that off, as the kombu bus does.
    """

    def __init__(self, url: str, *, str_bodies: bool = True) -> None:
        self._conn = Connection(url)
        channel = self._conn.channel()
        self._producer = Producer(channel)
        name = f"bench.reply.{uuid.uuid4().hex}"
        self._reply_queue = Queue(name, _DEFAULT, routing_key=name, exclusive=True, auto_delete=True)
        self._replies: dict[str, bytes] = {}
        reply_channel = self._conn.channel()
        reply_channel.auto_decode = str_bodies
        self._consumer = Consumer(reply_channel, [self._reply_queue], on_message=self._on_reply, no_ack=True)
        self._consumer.consume()

    def _on_reply(self, message: Message) -> None:
        self._replies[message.properties["correlation_id"]] = message.body

    def call(
        self, queue: str = ECHO_QUEUE, method: str = "echo", params: dict[str, Any] | None = None
    ) -> bytes:
        """The reply to a JSON-RPC request sent to ``queue``."""
        correlation_id = uuid.uuid4().hex
        body = jsonrpc.request_body(correlation_id, method, params or {})
        self._producer.publish(
            body,
            routing_key=queue,
            reply_to=self._reply_queue.name,
            correlation_id=correlation_id,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=1,
        )
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while correlation_id not in self._replies:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no reply from {queue}")
            with contextlib.suppress(TimeoutError):
                self._conn.drain_events(timeout=1.0)
        return self._replies.pop(correlation_id)

    def close(self) -> None:
        self._conn.release()


class Servers:
    """Runs in a process of its own, as a deployed aggregator would: the aggregator and the echo server.

    Keeping them out of the client's process keeps the client's heap (and so the cost of its
    garbage collections) the size it is in real use.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._running: list[RunningAggregator | EchoServer] = []
        self._view = TaskView()

    def start(
        self,
        n: int,
        method: str = MethodName.GET_ALL_TASKS,
        params: dict[str, Any] | None = None,
        spm_every: int = 2,
    ) -> int:
        """Serve a view of ``n`` tasks (one in ``spm_every`` tagged spm); returns the size of the
        reply to ``method`` (getAllTasks by default) with ``params``, which the echo sends to
        every request."""
        view = workload.build_view(n, spm_every=spm_every)
        # One reply of every task, as this figure has measured it from the start: up to the
        # shared broker's own limit (RabbitMQ 3.x: 128 MiB), not the default max_reply_bytes.
        # The echo's payload is made under the same limit (under the default one it would be
        # the -32012 error of a listing too large).
        request = jsonrpc.request_body("bench", method, GET_ALL if params is None else params)
        payload = reply_body(rpc.Dispatcher(view, max_reply_bytes=UNPAGED_REPLY_BYTES), request)
        self._view = view
        policy = AggregatorPolicy(max_reply_bytes=UNPAGED_REPLY_BYTES)
        running = RunningAggregator(Aggregator(transport.open(self._url), view=view, policy=policy))
        running.__enter__()
        self._running.append(running)
        echo = EchoServer(self._url, payload)
        echo.__enter__()
        self._running.append(echo)
        return len(payload)

    def touch(self) -> None:
        """Mark the view changed, as one new event would: the next answer is encoded afresh."""
        self._view.version += 1

    def stop(self) -> None:
        while self._running:
            self._running.pop().__exit__(None, None, None)


def decoded(body: bytes) -> Any:
    """Decode a reply as TasksClient does: orjson, with the cyclic GC paused (JSON has no cycles)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return codec.loads(body)
    finally:
        if collecting:
            gc.enable()


def measure_size(
    servers: Child, n: int, reps: int, client: TasksClient, raw: RawClient, *, raw_bytes: RawClient
) -> Figure:
    size = servers.call("start", n)
    raw_replies: list[float] = []  # where the time goes: the aggregator's reply as bytes, no client
    try:
        got = client.get_all_tasks()
        check(len(got) == n, f"getAllTasks returned {len(got)} tasks of {n}")
        check(len(raw.call()) == size, "the echo payload is not the size of the reply")
        reply = raw.call(names.RPC_QUEUE, MethodName.GET_ALL_TASKS, GET_ALL)
        # The same reply but for its id: "bench" in the echo payload, a 32-digit hex id here.
        check(len(reply) == size - len("bench") + 32, "the raw getAllTasks reply differs in size")
        del got
        decode_s = median([timed(lambda: codec.loads(reply))[0] for _ in range(3)])

        def ours() -> float:
            servers.call("touch")  # a poll after a change: no cached answer
            seconds, tasks = timed(client.get_all_tasks)
            check(len(tasks) == n, f"getAllTasks returned {len(tasks)} tasks of {n}")
            return seconds

        def baseline() -> float:
            # A user of raw kombu decodes the payload too: same codec, same way as TasksClient.
            seconds, _ = timed(lambda: decoded(raw.call()))
            raw_replies.append(timed(lambda: raw.call(names.RPC_QUEUE, MethodName.GET_ALL_TASKS, GET_ALL))[0])
            return seconds

        def baseline_bytes() -> float:
            # The echo without py-amqp's str decoding, which the kombu bus skips too.
            return timed(lambda: decoded(raw_bytes.call()))[0]

        times = side_by_side(ours, baseline, reps)
        against_bytes = side_by_side(ours, baseline_bytes, reps)
    finally:
        servers.call("stop")
    say(f"  query {n:,}: ours {fmt_time(median(times.ours))}, echo {fmt_time(median(times.baseline))}")
    return Figure(
        f"query {n:,}",
        fmt_time(median(times.ours)),
        fmt_time(median(times.baseline)),
        times.ratio,
        at_most(1.2),
        f"{n:,} tasks, reply {fmt_bytes(size)}, {reps} reps",
        note=(
            f"TasksClient.get_all_tasks() vs raw kombu echo of {fmt_bytes(size)}, decoded the same way;"
            f" {times.spread()}. Where the time goes: the aggregator's reply fetched as raw bytes"
            f" {fmt_time(median(raw_replies))}, decoding it (orjson, in this process)"
            f" {fmt_time(decode_s)}. Against an echo whose bodies stay bytes (as ours reads"
            f" them; {fmt_time(median(against_bytes.baseline))}), side by side: ratio"
            f" {against_bytes.ratio:.3g}, {against_bytes.spread()}"
        ),
    )


def run(quick: bool) -> list[Figure]:
    figures = []
    with rabbitmq_vhost("query") as url:
        client = TasksClient(transport.open(url), timeout_s=CALL_TIMEOUT_S)
        raw = RawClient(url)
        raw_bytes = RawClient(url, str_bodies=False)
        try:
            with Child(Servers, url) as servers:
                for n, reps in QUICK_SIZES if quick else SIZES:
                    figures.append(measure_size(servers, n, reps, client, raw, raw_bytes=raw_bytes))
        finally:
            raw_bytes.close()
            raw.close()
            client.close()
    return figures
