"""Figure ``stomp``: a getAllTasksStatuses round trip through the STOMP front door vs straight over AMQP.

The aggregator and the front door each run in a child process of their own, as deployed; the
calls, from this process, alternate between a STOMP client (VDSM's frames, one-element batches)
and a ``TasksClient``. Then 20 STOMP clients call at once, and their calls/s are printed.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

from bench.harness import Child, Figure, at_most, check, fmt_time, median, rabbitmq_vhost, say, side_by_side
from bus_tasks import codec, transport
from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.frontdoors.stomp.frames import Frame, FrameParser
from bus_tasks.frontdoors.stomp.running import RunningFrontDoor
from bus_tasks.protocol.methods import MethodName
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.transport import BusOptions

TASKS = 50
CALL_TIMEOUT_S = 30.0
CONCURRENT = 20
RECV_BYTES = 64 * 1024  # a 1 MiB recv buffer cost this client ~20 us per call (allocation), not the door


class Aggregating:
    """The child that runs the aggregator and publishes ``TASKS`` spm tasks once."""

    def __init__(self, url: str) -> None:
        self._running = RunningAggregator(Aggregator(transport.open(url)))
        self._running.__enter__()
        publisher = TaskPublisher(transport.open(url, BusOptions(confirm_publish=True)), "vdsm")
        for i in range(TASKS):
            publisher.create(f"verb{i}", ["spm"])
        publisher.flush()

    def stop(self) -> None:
        self._running.__exit__(None, None, None)


class Door:
    """The child that runs the front door; :meth:`port` says where."""

    def __init__(self, url: str) -> None:
        self._door = RunningFrontDoor(
            transport.open(url, BusOptions(confirm_publish=False)), timeout_s=CALL_TIMEOUT_S
        )
        self._door.__enter__()

    def port(self) -> int:
        return self._door.port

    def stop(self) -> None:
        self._door.__exit__(None, None, None)


class StompCaller:
    """VDSM's frames over a plain socket: CONNECT, SUBSCRIBE, then SEND and wait for the MESSAGE."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reply_to = str(uuid.uuid4())
        self.parser = FrameParser()
        self.frames: list[Frame] = []
        self.sock.sendall(
            b"CONNECT\naccept-version:1.2\nheart-beat:0,24000\n\n\x00"
            + f"SUBSCRIBE\ndestination:{self.reply_to}\nack:auto\nid:{uuid.uuid4()}\n\n\x00".encode()
        )
        check(self._frame().command == "CONNECTED", "the front door answers CONNECT")

    def _frame(self) -> Frame:
        while not self.frames:
            data = self.sock.recv(RECV_BYTES)
            check(bool(data), "the front door keeps the connection open")
            self.frames.extend(self.parser.feed(data))
        return self.frames.pop(0)

    def statuses(self) -> Any:
        body = codec.dumps(
            [{"jsonrpc": "2.0", "method": MethodName.GET_ALL_TASKS_STATUSES, "params": {}, "id": "1"}]
        )
        self.sock.sendall(
            b"SEND\ndestination:jms.topic.vdsm_requests\ncontent-type:application/json\n"
            + f"reply-to:{self.reply_to}\ncontent-length:{len(body)}\n\n".encode()
            + body
            + b"\x00"
        )
        return codec.loads(self._frame().body)[0]["result"]

    def close(self) -> None:
        self.sock.close()


def _per_call(call: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def _concurrent_rate(port: int, calls_each: int) -> float:
    callers = [StompCaller(port) for _ in range(CONCURRENT)]
    barrier = threading.Barrier(CONCURRENT + 1, timeout=CALL_TIMEOUT_S)
    threads = [
        threading.Thread(target=lambda c=c: (barrier.wait(), [c.statuses() for _ in range(calls_each)]))
        for c in callers
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join(CALL_TIMEOUT_S * calls_each)
    elapsed = time.perf_counter() - start
    for caller in callers:
        caller.close()
    return CONCURRENT * calls_each / elapsed


def run(quick: bool) -> list[Figure]:
    calls, reps, calls_each = (50, 3, 20) if quick else (300, 9, 100)
    with rabbitmq_vhost("stomp") as url, Child(Aggregating, url) as aggregating, Child(Door, url) as door:
        client = TasksClient(transport.open(url), timeout_s=CALL_TIMEOUT_S)
        caller = StompCaller(door.call("port"))
        try:
            wait_until(lambda: len(client.get_all_tasks_statuses()) == TASKS, timeout_s=60, what="tasks seen")
            check(caller.statuses() == client.get_all_tasks_statuses(), "both paths give the same answer")
            for _ in range(calls):  # warm both paths
                caller.statuses()
                client.get_all_tasks_statuses()
            measured = side_by_side(
                lambda: _per_call(caller.statuses, calls),
                lambda: _per_call(client.get_all_tasks_statuses, calls),
                reps,
            )
            per_s = _concurrent_rate(door.call("port"), calls_each)
        finally:
            caller.close()
            client.close()
            door.call("stop")
            aggregating.call("stop")
    say(f"   stomp: {measured.spread()}; {CONCURRENT} concurrent STOMP clients: {per_s:,.0f} calls/s")
    return [
        Figure(
            "stomp round trip",
            fmt_time(median(measured.ours)),
            fmt_time(median(measured.baseline)),
            measured.ratio,
            at_most(1.3),
            f"{TASKS} spm tasks, {calls} calls x {reps} reps",
            note=f"{CONCURRENT} concurrent clients: {per_s:,.0f} calls/s",
        )
    ]
