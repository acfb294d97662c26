"""Figure ``clients``: 32 client processes polling ``getAllTasksStatuses`` at once, on RabbitMQ.

One child process serves (as in ``query``): the aggregator, with a view of 1,000 tasks of which
100 are tagged ``spm``, and a raw kombu echo server that answers every request with the bytes of
the aggregator's ``getAllTasksStatuses`` reply. 32 client processes (``spawn``), each with a
``TasksClient`` and a raw kombu request/reply client, start one block of calls at one instant
(``perf_counter``, system-wide) and call back to back; the blocks alternate between the two
servers. Calls/s is every call of the block over the time from that instant to the last reply;
each call's latency is kept for p50 and p99. Repeated polls of an unchanged view are answered
from the aggregator's listing cache: that is what polling clients get.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from bench.harness import (
    Child,
    Figure,
    Sizes,
    at_least,
    check,
    fmt_time,
    median,
    percentile,
    rabbitmq_vhost,
    say,
    side_by_side,
)
from bench.query import RawClient, Servers, decoded
from bus_tasks import transport
from bus_tasks.client import TasksClient
from bus_tasks.protocol.methods import MethodName

CLIENTS = Sizes(full=32, quick=4)
CALLS = Sizes(full=60, quick=10)  # per client and block
REPS = Sizes(full=5, quick=2)
TASKS = 1_000
SPM_EVERY = 10  # 100 of the 1,000 tasks are tagged spm
START_DELAY_S = 0.3  # every client starts its block this long after the block is sent
CALL_TIMEOUT_S = 60.0


class Caller:
    """A client process (see :class:`Child`): both clients, connected once."""

    def __init__(self, url: str) -> None:
        self._client = TasksClient(transport.open(url), timeout_s=CALL_TIMEOUT_S)
        self._raw = RawClient(url)
        self._calls = {
            "ours": self._client.get_all_tasks_statuses,
            "raw": lambda: decoded(self._raw.call())["result"],
        }

    def answer(self, side: str) -> Any:
        return self._calls[side]()

    def block(self, side: str, calls: int, start_at: float) -> tuple[float, list[float]]:
        """``calls`` calls back to back from ``start_at``: when the last ended, and each one's seconds."""
        call = self._calls[side]
        time.sleep(max(0.0, start_at - time.perf_counter()))
        latencies = []
        for _ in range(calls):
            began = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - began)
        return time.perf_counter(), latencies

    def close(self) -> None:
        self._raw.close()
        self._client.close()


def run(quick: bool) -> list[Figure]:
    clients, calls, reps = CLIENTS.pick(quick), CALLS.pick(quick), REPS.pick(quick)
    latencies: dict[str, list[float]] = {"ours": [], "raw": []}
    with rabbitmq_vhost("clients") as url, Child(Servers, url) as servers, ExitStack() as stack:
        size = servers.call("start", TASKS, MethodName.GET_ALL_TASKS_STATUSES, {}, SPM_EVERY)
        try:
            callers = [stack.enter_context(Child(Caller, url)) for _ in range(clients)]
            ours_answer = callers[0].call("answer", "ours")
            check(len(ours_answer) == TASKS // SPM_EVERY, f"{len(ours_answer)} spm tasks listed")
            check(callers[0].call("answer", "raw") == ours_answer, "the echo answers another listing")

            def block(side: str) -> float:
                start_at = time.perf_counter() + START_DELAY_S
                for caller in callers:
                    caller.send("block", side, calls, start_at)
                results: list[tuple[float, list[float]]] = [caller.result() for caller in callers]
                for _, seconds in results:
                    latencies[side].extend(seconds)
                return clients * calls / (max(done_at for done_at, _ in results) - start_at)

            throughput = side_by_side(lambda: block("ours"), lambda: block("raw"), reps)
            for caller in callers:
                caller.call("close")
        finally:
            servers.call("stop")
    ours, raw = latencies["ours"], latencies["raw"]
    say(
        f"  clients: ours {median(throughput.ours):,.0f} calls/s (p50 {fmt_time(percentile(ours, 0.5))},"
        f" p99 {fmt_time(percentile(ours, 0.99))}), echo {median(throughput.baseline):,.0f} calls/s"
        f" (p50 {fmt_time(percentile(raw, 0.5))}, p99 {fmt_time(percentile(raw, 0.99))})"
    )
    return [
        Figure(
            f"clients {clients}",
            f"{median(throughput.ours):,.0f} calls/s",
            f"{median(throughput.baseline):,.0f} calls/s",
            throughput.ratio,
            at_least(0.8),
            f"{clients} processes x {calls} calls x {reps} reps, {TASKS // SPM_EVERY} spm of {TASKS:,}"
            f" tasks, reply {size:,} B",
            note=(
                f"getAllTasksStatuses from {clients} client processes at once vs a raw kombu echo of"
                f" the same bytes to the same clients; latency ours p50"
                f" {fmt_time(percentile(ours, 0.5))} p99 {fmt_time(percentile(ours, 0.99))}, echo"
                f" p50 {fmt_time(percentile(raw, 0.5))} p99 {fmt_time(percentile(raw, 0.99))};"
                f" {throughput.spread()}"
            ),
        )
    ]
