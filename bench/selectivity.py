"""Figure 4, selectivity: ``getAllTasks(tags=[T])`` where 1% carry T, against the full listing.

Served in process (JSON-RPC dispatch and encoding of the reply, as the aggregator does for each
request) so that the figure is about the view and its tag index, not the broker.
"""

from __future__ import annotations

from bench import workload
from bench.harness import (
    UNPAGED_REPLY_BYTES,
    Figure,
    HarnessError,
    Sizes,
    at_most,
    check,
    fmt_time,
    median,
    say,
    side_by_side,
    timed,
)
from bus_tasks import codec
from bus_tasks.aggregator import methods as rpc
from bus_tasks.core.view import TaskView
from bus_tasks.protocol import jsonrpc
from bus_tasks.protocol.methods import MethodName

TASKS = Sizes(full=100_000, quick=5_000)
REPS = Sizes(full=7, quick=3)
SELECTIVE_EVERY = 100  # 1% of the tasks carry the tag


def request(tags: list[str] | None) -> bytes:
    return jsonrpc.request_body("bench", MethodName.GET_ALL_TASKS, {"tags": tags, "options": None})


def reply_body(dispatcher: rpc.Dispatcher, request: bytes) -> bytes:
    """The aggregator's answer to ``request``, as it puts it on the wire."""
    body = dispatcher.handle(request).body
    if body is None:
        raise HarnessError(f"no reply to {request!r}")
    return body


def serve(view: TaskView, request: bytes) -> tuple[float, bytes]:
    """Seconds to answer ``request`` from scratch, and the reply.

    A new dispatcher each time: the view's query is measured, not the dispatcher's cache of
    encoded answers (which would serve both sides of the ratio alike).
    """
    # The whole listing unpaged (40 MiB at 100,000 tasks), as the query figure takes it: its
    # cost per task is the denominator, so the default max_reply_bytes would refuse it.
    dispatcher = rpc.Dispatcher(view, max_reply_bytes=UNPAGED_REPLY_BYTES)
    return timed(lambda: reply_body(dispatcher, request))


def result_size(reply: bytes) -> int:
    result = codec.loads(reply).get("result")
    check(isinstance(result, dict), f"not a getAllTasks result: {reply[:200]!r}")
    return len(result)


def run(quick: bool) -> list[Figure]:
    n = TASKS.pick(quick)
    reps = REPS.pick(quick)
    build_s, view = timed(lambda: workload.build_view(n, selective_every=SELECTIVE_EVERY))
    say(f"  selectivity: view of {n:,} tasks built in {build_s:.1f}s")
    tagged, full = request([workload.SELECTIVE_TAG]), request(None)

    _, reply = serve(view, tagged)
    matching = result_size(reply)
    _, reply = serve(view, full)
    check(result_size(reply) == n, "the full listing does not list every task")
    expected = len(range(0, n, SELECTIVE_EVERY))
    check(matching == expected, f"{matching} tasks carry the tag, not {expected}")
    del reply

    times = side_by_side(lambda: serve(view, tagged)[0], lambda: serve(view, full)[0], reps)
    return [
        Figure(
            "selectivity",
            fmt_time(median(times.ours)),
            fmt_time(median(times.baseline)),
            times.ratio,
            at_most(0.05),
            f"{n:,} tasks, {matching:,} tagged, {reps} reps",
            note=f"getAllTasks(tags=[T]) vs getAllTasks(), served in process; {times.spread()}",
        )
    ]
