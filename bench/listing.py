"""Figure ``listing``: every task of a 1,000,000-task view through the bus, the client paging
(SPEC section 14), against a raw kombu transfer of the same bytes in the same page sizes.

One child process serves (as in ``query``): the aggregator, at its default ``max_reply_bytes``
(a listing of every task is far over it), and an echo server that holds the aggregator's own
page replies, taken beforehand, and answers request k with page k. This process lists with
``TasksClient.get_all_tasks()`` (its first unpaged ask answered -32012, it pages from the
start after: ``CLIENT_PAGE_LIMIT`` tasks a page) and, for the baseline, asks the echo for each page in turn over
raw kombu, decoding each page and gathering its tasks into one dict the same way.
"""

from __future__ import annotations

from typing import Any

from bench import workload
from bench.harness import (
    Child,
    Figure,
    Sizes,
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
from bench.query import EchoServer, RawClient, decoded
from bus_tasks import transport
from bus_tasks.aggregator import Aggregator
from bus_tasks.aggregator import methods as rpc
from bus_tasks.client import TasksClient
from bus_tasks.protocol import jsonrpc, paging
from bus_tasks.testing import RunningAggregator

TASKS = Sizes(full=1_000_000, quick=30_000)
REPS = Sizes(full=3, quick=2)
CALL_TIMEOUT_S = 120.0


class PagedEcho(EchoServer):
    """The echo, answering its n-th request with the n-th page (round and round)."""

    def __init__(self, url: str, pages: list[bytes]) -> None:
        super().__init__(url, pages[0])
        self._pages = pages
        self._next = 0

    def next_payload(self) -> bytes:
        page = self._pages[self._next % len(self._pages)]
        self._next += 1
        return page


class Servers:
    """The aggregator and the paged echo, in a process of their own."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._running: list[Any] = []

    def start(self, n: int) -> tuple[int, int]:
        """Serve a view of ``n`` tasks; returns (pages, bytes) of its listing in client pages."""
        view = workload.build_view(n)
        dispatcher = rpc.Dispatcher(view)
        pages: list[bytes] = []
        collector = paging.Collector(None, None)
        while (params := collector.next_params()) is not None:
            reply = dispatcher.handle(jsonrpc.request_body("bench", "Host.getAllTasks", params)).body
            assert reply is not None
            pages.append(reply)
            collector.take(jsonrpc.outcome(jsonrpc.parse_response(reply)))
        running = RunningAggregator(Aggregator(transport.open(self._url), view=view))
        running.__enter__()
        self._running.append(running)
        echo = PagedEcho(self._url, pages)
        echo.__enter__()
        self._running.append(echo)
        return len(pages), sum(map(len, pages))

    def stop(self) -> None:
        while self._running:
            self._running.pop().__exit__(None, None, None)


def run(quick: bool) -> list[Figure]:
    n, reps = TASKS.pick(quick), REPS.pick(quick)
    with rabbitmq_vhost("listing") as url:
        client = TasksClient(transport.open(url), timeout_s=CALL_TIMEOUT_S)
        raw = RawClient(url, str_bodies=False)  # bytes bodies, as ours reads them
        try:
            with Child(Servers, url) as servers:
                pages, size = servers.call("start", n)
                try:

                    def ours() -> float:
                        seconds, tasks = timed(client.get_all_tasks)
                        check(len(tasks) == n, f"get_all_tasks returned {len(tasks)} tasks of {n}")
                        return seconds

                    def baseline() -> float:
                        def transfer() -> dict[str, Any]:
                            tasks: dict[str, Any] = {}
                            for _ in range(pages):
                                tasks.update(decoded(raw.call())["result"]["tasks"])
                            return tasks

                        seconds, tasks = timed(transfer)
                        check(len(tasks) == n, f"the raw pages held {len(tasks)} tasks of {n}")
                        return seconds

                    times = side_by_side(ours, baseline, reps)
                finally:
                    servers.call("stop")
        finally:
            raw.close()
            client.close()
    say(f"  listing {n:,}: ours {fmt_time(median(times.ours))}, raw pages {fmt_time(median(times.baseline))}")
    return [
        Figure(
            f"listing {n:,}",
            fmt_time(median(times.ours)),
            fmt_time(median(times.baseline)),
            times.ratio,
            at_most(1.3),
            f"{n:,} tasks, {pages} pages, {fmt_bytes(size)}, {reps} reps",
            note=(
                f"TasksClient.get_all_tasks() of every task through the bus (pages of"
                f" {paging.CLIENT_PAGE_LIMIT:,}, once its first unpaged ask was answered -32012) vs raw kombu"
                f" request/reply of the same {pages} page replies, decoded and gathered the same"
                f" way; {times.spread()}"
            ),
        )
    ]
