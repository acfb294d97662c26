"""Figure 6, scale: the view at 1,000,000 tasks against the same view at 100,000, per task.

Each view lives in a fresh interpreter of its own (so its resident memory is its alone); the
getAllTasks runs alternate between the two. getAllTasks is served in process (dispatch and
encoding of the reply): a 1,000,000-task reply (~400 MB) is over RabbitMQ's message size limit.
"""

from __future__ import annotations

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
    retained_rss,
    say,
    side_by_side,
    timed,
)
from bench.selectivity import reply_body
from bus_tasks.aggregator import methods as rpc
from bus_tasks.core.view import TaskView
from bus_tasks.protocol import jsonrpc
from bus_tasks.protocol.methods import MethodName

LARGE = Sizes(full=1_000_000, quick=20_000)
SMALL = Sizes(full=100_000, quick=2_000)
REPS = Sizes(full=7, quick=2)
FLAT = 1.25  # per-task cost may grow this much from 10x fewer tasks and still count as flat


IN_PROCESS_REPLY_BYTES = 1 << 40  # no limit: the reply never leaves the process


class ViewProbe:
    """Runs in a fresh interpreter: holds one view, measures its memory and getAllTasks on it."""

    def __init__(self) -> None:
        self._view = TaskView()
        self._n = 0

    def build(self, n_tasks: int) -> tuple[float, float]:
        """Bytes retained per task, and seconds taken."""
        workload.build_view(min(n_tasks, 1_000))  # warm up imports and validators
        seconds, (retained, view) = timed(lambda: retained_rss(lambda: workload.build_view(n_tasks)))
        self._view, self._n = view, n_tasks
        return retained / n_tasks, seconds

    def get_all_tasks(self) -> float:
        """Seconds per task of one getAllTasks()."""
        body = jsonrpc.request_body("bench", MethodName.GET_ALL_TASKS, {"tags": None, "options": None})
        # From scratch (not the cache of encoded answers), and unpaged: in process, no broker to
        # carry it, so no size limit (1,000,000 tasks are 400 MiB, over any max_reply_bytes).
        dispatcher = rpc.Dispatcher(self._view, max_reply_bytes=IN_PROCESS_REPLY_BYTES)
        seconds, reply = timed(lambda: reply_body(dispatcher, body))
        check(b'"error"' not in reply[:200], f"getAllTasks failed: {reply[:200]!r}")
        return seconds / self._n


def run(quick: bool) -> list[Figure]:
    large, small, reps = LARGE.pick(quick), SMALL.pick(quick), REPS.pick(quick)
    with Child(ViewProbe) as large_probe, Child(ViewProbe) as small_probe:
        large_probe.send("build", large)
        small_probe.send("build", small)
        large_bytes, large_s = large_probe.result()
        small_bytes, small_s = small_probe.result()
        say(f"  scale: views built in {large_s:.0f}s ({large:,}) and {small_s:.0f}s ({small:,})")
        per_task = side_by_side(
            lambda: large_probe.call("get_all_tasks"), lambda: small_probe.call("get_all_tasks"), reps
        )
    sizes = f"{large:,} vs {small:,} tasks"
    return [
        Figure(
            "scale memory",
            f"{fmt_bytes(large_bytes)}/task",
            f"{fmt_bytes(small_bytes)}/task",
            large_bytes / small_bytes,
            at_most(FLAT),
            sizes,
            note=f"resident memory per stored task of the view at {large:,} vs {small:,} tasks",
        ),
        Figure(
            "scale getAllTasks",
            f"{fmt_time(median(per_task.ours))}/task",
            f"{fmt_time(median(per_task.baseline))}/task",
            per_task.ratio,
            at_most(FLAT),
            f"{sizes}, {reps} reps",
            note=f"getAllTasks() served in process, time per task; {per_task.spread()}",
        ),
    ]
