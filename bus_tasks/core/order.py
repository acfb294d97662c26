"""Every task id of a view in sorted order, kept as tasks come and go: pages in id order without
a sort of every id at each listing. Pure, no I/O.

Sorting 1,000,000 ids takes about a second; keeping them sorted costs the view one list append a
new task, and whoever reads the order next merges those in (a bisect each, then one copy of the
order). An id that left the view stays in the order until such ids outnumber a quarter of the
live ones: whoever reads the order looks each id up anyway (a page skips what is gone). Nobody reading it, the
order is let go once more ids were added than it holds, and sorted afresh when next asked.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

# New ids noted past the order's own length (and this many) let it go: nobody reads it.
SLACK = 1024
# Merged one by one below a quarter of the order's length; past it, all ids are sorted afresh.
MERGE_FRACTION = 4


class IdOrder:
    """The sorted ids of one view (:class:`~bus_tasks.core.view.TaskView` tells it each new id)."""

    __slots__ = ("_added", "_sorted")

    def __init__(self) -> None:
        self._sorted: list[str] | None = None  # None: not kept (never asked, or let go)
        self._added: list[str] = []  # new to the view since the order was last read

    @property
    def kept(self) -> bool:
        """Whether an order is kept (else the next read sorts every id)."""
        return self._sorted is not None

    def add(self, task_id: str) -> None:
        """``task_id`` is new to the view (an update of a task already there is not new)."""
        order = self._sorted
        if order is None:
            return
        added = self._added
        added.append(task_id)
        if len(added) > len(order) + SLACK:
            self._sorted, self._added = None, []

    def ids(self, live: Mapping[str, object]) -> list[str]:
        """Every id of ``live`` (the view's tasks) in sorted order, each once, and perhaps ids
        that have left it since (look each up). The list is never changed afterwards: a later
        read that finds new ids makes a new one."""
        order, added = self._sorted, self._added
        if order is None or len(added) * MERGE_FRACTION > len(order):
            order = sorted(live)
        elif added:
            order = _merged(order, added, live)
        if len(order) - len(live) > len(live) // MERGE_FRACTION:  # more gone than a quarter of the live
            order = [task_id for task_id in order if task_id in live]
        self._sorted, self._added = order, []
        return order


def _merged(order: list[str], added: list[str], live: Mapping[str, object]) -> list[str]:
    """``order`` with the ids of ``added`` that are in ``live`` and not in it yet, in order."""
    merged: list[str] = []
    start = 0
    end = len(order)
    for task_id in sorted({task_id for task_id in added if task_id in live}):
        at = bisect.bisect_left(order, task_id, start)
        if at < end and order[at] == task_id:  # it left and came back: still in the order
            continue
        merged += order[start:at]
        merged.append(task_id)
        start = at
    if start == 0 and not merged:
        return order
    merged += order[start:]
    return merged
