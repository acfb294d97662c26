"""Plain-text tables of task listings, for the CLI and the demo."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; ``-`` for empty cells."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or value in ("", []):
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _sorted(tasks: dict[str, dict[str, Any]], key: str = "") -> list[dict[str, Any]]:
    return sorted(tasks.values(), key=lambda t: (t.get(key, ""), t.get("taskID") or t.get("id", "")))


def tasks_table(tasks: dict[str, dict[str, Any]]) -> str:
    """``getAllTasks`` result as a table, oldest first."""
    rows = [
        (
            t["id"],
            t["subsystem"],
            t["verb"],
            t["tags"],
            t["state"],
            f"{t['taskState']}/{t['taskResult']}" if t["taskResult"] else t["taskState"],
            "" if t["progress"] is None else f"{t['progress']}%",
            t["code"],
            t["message"],
        )
        for t in _sorted(tasks, "createdAt")
    ]
    headers = (
        "TASK ID",
        "SUBSYSTEM",
        "VERB",
        "TAGS",
        "STATE",
        "ENGINE STATE",
        "PROGRESS",
        "CODE",
        "MESSAGE",
    )
    return f"{table(headers, rows)}\n({len(rows)} tasks)"


def info_table(info: dict[str, dict[str, Any]]) -> str:
    """``getAllTasksInfo`` result as a table."""
    rows = [(task_id, v["verb"]) for task_id, v in sorted(info.items())]
    return f"{table(('TASK ID', 'VERB'), rows)}\n({len(rows)} tasks)"


def statuses_table(statuses: dict[str, dict[str, Any]]) -> str:
    """``getAllTasksStatuses`` result as a table."""
    rows = [
        (task_id, s["taskState"], s["taskResult"], s["code"], s["message"])
        for task_id, s in sorted(statuses.items())
    ]
    headers = ("TASK ID", "TASK STATE", "TASK RESULT", "CODE", "MESSAGE")
    return f"{table(headers, rows)}\n({len(rows)} tasks)"
