"""``bus-tasks tasks --watch``: a live table on a terminal, a line per change elsewhere.

On a terminal the table is redrawn in place (at most ``REDRAW_S`` apart) with counts by state,
like ``celery events``; piped, each change is one line (or one JSON object with ``--json``) as
it comes, for ``grep`` and scripts.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, TextIO

from bus_tasks.watching import Watch, WatchEvent
from bus_tasks.workers import render

REDRAW_S = 0.2
_HOME_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen


def state_counts(tasks: dict[str, dict[str, Any]]) -> str:
    """``running 3 · finished 10``: how many tasks are in each state, most first."""
    counts = Counter(task["state"] for task in tasks.values())
    return " · ".join(f"{state} {count}" for state, count in counts.most_common()) or "no tasks"


def change_line(event: WatchEvent) -> str:
    """One change as a line: revision, what happened, the task and its state."""
    if event.kind == "listing":
        tasks = event.tasks or {}
        return f"{event.revision} listing {render.plural(len(tasks), 'task')}: {state_counts(tasks)}"
    if event.kind == "bookmark":
        return f"{event.revision} bookmark"
    if event.kind == "removed":
        return f"{event.revision} removed {event.task_id}"
    task = event.task or {}
    progress = "" if task.get("progress") is None else f" {task['progress']}%"
    tags = ",".join(task.get("tags", ()))
    message = render.escape(str(task.get("message", "")))
    return (
        f"{event.revision} changed {event.task_id} {task.get('subsystem')} {task.get('verb')}"
        f" [{tags}] {task.get('state')}{progress} {message}".rstrip()
    )


def event_json(event: WatchEvent) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": event.kind, "revision": event.revision}
    if event.task_id is not None:
        body["id"] = event.task_id
    if event.kind == "changed":
        body["task"] = event.task
    if event.kind == "listing":
        body["tasks"] = event.tasks
    return body


def follow_lines(events: Iterable[WatchEvent], out: TextIO, *, as_json: bool) -> None:
    """Piped: every event as one line, flushed at once (bookmarks only as JSON)."""
    for event in events:
        if as_json:
            out.write(render.to_json(event_json(event), pretty=False) + "\n")
        elif event.kind != "bookmark":
            out.write(change_line(event) + "\n")
        out.flush()


def follow_screen(watch: Watch, out: TextIO, *, title: str) -> None:
    """On a terminal: the whole selection as a table, redrawn in place as it changes (at most
    every ``REDRAW_S``; what came in between is drawn when the feed is quiet)."""
    tasks: dict[str, dict[str, Any]] = {}
    revision = 0
    drawn_at = 0.0
    dirty = False

    def draw() -> None:
        nonlocal drawn_at, dirty
        if dirty:
            out.write(_HOME_CLEAR + screen(tasks, revision, title=title))
            out.flush()
            drawn_at, dirty = time.monotonic(), False

    watch.on_idle = draw
    for event in watch:
        revision = event.revision
        if event.kind == "listing":
            tasks = dict(event.tasks or {})
        elif event.kind == "changed" and event.task_id is not None and event.task is not None:
            tasks[event.task_id] = event.task
        elif event.kind == "removed" and event.task_id is not None:
            tasks.pop(event.task_id, None)
        dirty = True
        if time.monotonic() - drawn_at >= REDRAW_S:
            draw()


def screen(tasks: dict[str, dict[str, Any]], revision: int, *, title: str) -> str:
    """The table fitted to the terminal: as many rows as its height allows, newest last."""
    size = shutil.get_terminal_size()
    head = f"{title} · revision {revision} · {state_counts(tasks)} · Ctrl-C to stop\n"
    rows = max(size.lines - 5, 1)
    shown = dict(list(_newest(tasks))[-rows:])
    text = render.tasks_table(shown, width=size.columns)
    if len(shown) < len(tasks):
        text += f" of {len(tasks)}, the {len(shown)} updated last shown"
    return head + text + "\n"


def _newest(tasks: dict[str, dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any]]]:
    return sorted(tasks.items(), key=lambda item: item[1].get("updatedAt", ""))
