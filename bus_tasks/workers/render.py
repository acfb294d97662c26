"""Plain-text tables and records of tasks, for the CLI and the demo; safe to print on a terminal.

Every cell is escaped (control characters, ANSI escape sequences and bidi overrides come out as
``\\x1b``, ``\\n``, ``\\u202e``: subsystem messages come from outside), so a task is one line.
Given a ``width`` (the terminal's), a table is fitted to it: the widest columns of free text
(message, tags, verb, subsystem) are cut first, with an ellipsis, never below their header; ids,
states and codes never. A terminal too narrow even for that wraps the lines. Without a width
(a pipe, a file), cells stay whole.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from bus_tasks import codec

ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"
SEPARATOR = "  "
# C0, DEL and C1 controls (ESC starts every ANSI sequence), line and paragraph separators, and
# the bidirectional marks and overrides that can make a terminal show text out of order.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_TASK_ID = "TASK ID"


def escape(text: str) -> str:
    """``text`` with every character that would act on a terminal written out visibly."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide (East Asian) characters two, combining ones none."""
    return sum(_char_width(char) for char in text)


def _char_width(char: str) -> int:
    if unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def truncate(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending in an ellipsis when cut."""
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += _char_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + ELLIPSIS if width > 0 else ""


def plural(count: int, noun: str) -> str:
    """``1 task``, ``2 tasks``, ``0 tasks``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    width: int | None = None,
    whole: Collection[str] = (_TASK_ID,),
    kept: dict[str, int] | None = None,
) -> str:
    """Left-aligned columns separated by two spaces, ``-`` for empty cells, one line per row.

    With ``width``, the widest cells are cut (ellipsis) until a line fits, except in the columns
    named in ``whole``, never below a column's header nor below the columns ``kept`` names.
    """
    cells = [[escape(_cell(v)) for v in row] for row in rows]
    natural = [display_width(h) for h in headers]
    for row in cells:
        natural = [max(w, display_width(c)) for w, c in zip(natural, row, strict=True)]
    widths = natural
    if width is not None:
        kept = kept or {}
        floors = [
            n if h in whole else max(display_width(h), min(n, kept.get(h, 0)))
            for h, n in zip(headers, natural, strict=True)
        ]
        widths = _fit(natural, floors, width - len(SEPARATOR) * (len(headers) - 1))
    lines = [_line(headers, widths)]
    lines += [_line([truncate(c, w) for c, w in zip(row, widths, strict=True)], widths) for row in cells]
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = (c + " " * (w - display_width(c)) for c, w in zip(cells, widths, strict=True))
    return SEPARATOR.join(padded).rstrip()


def _fit(natural: list[int], floors: list[int], budget: int) -> list[int]:
    """Column widths within ``budget``: each column capped at the largest cap that fits, not below
    its floor (if even the floors do not fit, the floors)."""

    def capped(cap: int) -> list[int]:
        return [min(n, max(f, cap)) for n, f in zip(natural, floors, strict=True)]

    low, high = 0, max(natural, default=0)
    while low < high:  # the largest cap whose widths fit; the sum grows with the cap
        cap = (low + high + 1) // 2
        if sum(capped(cap)) <= budget:
            low = cap
        else:
            high = cap - 1
    return capped(low)


def _cell(value: Any) -> str:
    if value is None or value in ("", []):
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _sorted(tasks: dict[str, dict[str, Any]], key: str = "") -> list[dict[str, Any]]:
    return sorted(tasks.values(), key=lambda t: (t.get(key, ""), t.get("taskID") or t.get("id", "")))


def _footer(count: int) -> str:
    return f"({plural(count, 'task')})"


# Cells of a few known words: cut, they would mislead ("runn…"); the free text is cut instead.
_TASK_WHOLE = (_TASK_ID, "STATE", "ENGINE STATE", "PROGRESS", "CODE")
# Names are cut last: a verb or subsystem keeps this many columns while the message and tags give theirs.
_TASK_KEPT = {"VERB": 16, "SUBSYSTEM": 10}
_STATUS_WHOLE = (_TASK_ID, "TASK STATE", "TASK RESULT", "CODE")
TASK_HEADERS = (_TASK_ID, "SUBSYSTEM", "VERB", "TAGS", "STATE", "ENGINE STATE", "PROGRESS", "CODE", "MESSAGE")


def tasks_table(tasks: dict[str, dict[str, Any]], *, width: int | None = None) -> str:
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
    text = table(TASK_HEADERS, rows, width=width, whole=_TASK_WHOLE, kept=_TASK_KEPT)
    return f"{text}\n{_footer(len(rows))}"


def info_table(info: dict[str, dict[str, Any]], *, width: int | None = None) -> str:
    """``getAllTasksInfo`` result as a table."""
    rows = [(task_id, v["verb"]) for task_id, v in sorted(info.items())]
    return f"{table((_TASK_ID, 'VERB'), rows, width=width)}\n{_footer(len(rows))}"


def statuses_table(statuses: dict[str, dict[str, Any]], *, width: int | None = None) -> str:
    """``getAllTasksStatuses`` result as a table."""
    rows = [
        (task_id, s["taskState"], s["taskResult"], s["code"], s["message"])
        for task_id, s in sorted(statuses.items())
    ]
    headers = (_TASK_ID, "TASK STATE", "TASK RESULT", "CODE", "MESSAGE")
    return f"{table(headers, rows, width=width, whole=_STATUS_WHOLE)}\n{_footer(len(rows))}"


def record(fields: dict[str, Any]) -> str:
    """One task's whole record as aligned ``key: value`` lines; objects (``data``) as indented JSON.

    Values are escaped and whole: a record is read, not scanned, and is never cut.
    """
    pad = max((len(key) for key in fields), default=0) + 2
    lines = []
    for key, value in fields.items():
        label = f"{escape(key)}:".ljust(pad)
        if isinstance(value, dict):
            text = to_json(value, pretty=True).replace("\n", "\n" + " " * pad)
        else:
            text = escape(_cell(value))
        lines.append(label + text)
    return "\n".join(lines)


def to_json(value: Any, *, pretty: bool) -> str:
    """``value`` as JSON, indented by two (for a person) or compact (for a program).

    Characters that would act on a terminal are written as JSON escapes (``\\u001b``), which
    mean the same to a JSON reader: the output is safe to show, whoever reads it.
    """
    text = json.dumps(value, indent=2, ensure_ascii=False) if pretty else codec.dumps(value).decode()
    # Outside strings JSON has no such character but the newlines of the indentation.
    return "\n".join(_UNSAFE.sub(_json_escaped, line) for line in text.split("\n"))


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


_SUBSYSTEM_WHOLE = ("SUBSYSTEM", "STATE", "TASKS")


def subsystems_table(subsystems: dict[str, dict[str, Any]], *, width: int | None = None) -> str:
    """``Host.getSubsystems`` result as a table, by name."""
    rows = [
        (
            s["subsystem"],
            s["state"],
            s["tasks"],
            s["lastSeen"] or "never",
            s["host"],
            s["pid"] or "",
            s["instance"],
        )
        for _, s in sorted(subsystems.items())
    ]
    headers = ("SUBSYSTEM", "STATE", "TASKS", "LAST SEEN", "HOST", "PID", "INSTANCE")
    body = table(headers, rows, width=width, whole=_SUBSYSTEM_WHOLE)
    return f"{body}\n({plural(len(rows), 'subsystem')})"


_AGGREGATOR_WHOLE = ("NAME", "REVISION", "TASKS", "UPTIME")


def aggregators_table(aggregators: list[dict[str, Any]], *, width: int | None = None) -> str:
    """``Host.getAggregators`` result as a table: the one that answered first."""
    rows = [
        (a["name"], a["revision"], a["tasks"], f"{a['uptimeS']:.0f}s", a["lastSeen"], a["instance"])
        for a in aggregators
    ]
    headers = ("NAME", "REVISION", "TASKS", "UPTIME", "LAST SEEN", "INSTANCE")
    body = table(headers, rows, width=width, whole=_AGGREGATOR_WHOLE)
    return f"{body}\n({plural(len(rows), 'aggregator')})"
