"""The CLI's tables and records: escaped for the terminal, one line per task, fitted to a width."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus_tasks.workers import render

TASK_ID = "6f1c2a4e-8b3d-4c1e-9a7f-2d5b8e0c1a3f"
OTHER_ID = "0b9e4d2c-1a3f-4e5d-8c7b-6a5f4e3d2c1b"


def task(task_id: str = TASK_ID, **fields: Any) -> dict[str, Any]:
    """A ``getAllTasks`` entry; ``fields`` replace its values."""
    entry = {
        "id": task_id,
        "taskID": task_id,
        "subsystem": "vdsm",
        "verb": "copyImage",
        "tags": ["spm"],
        "state": "running",
        "taskState": "running",
        "taskResult": "",
        "progress": 40,
        "code": 0,
        "message": "copying",
        "createdAt": "2026-05-09T07:35:25Z",
    }
    return {**entry, **fields}


# -- escaping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("one\r\ntwo\tthree", "one\\r\\ntwo\\tthree"),
        ("bell\x07 del\x7f csi\x9b", "bell\\x07 del\\x7f csi\\x9b"),
        ("\u202eevil\u2066 \u2028next", "\\u202eevil\\u2066 \\u2028next"),
        ("plain text, üñï 卷 C:\\path", "plain text, üñï 卷 C:\\path"),
    ],
    ids=["ansi", "line-breaks", "c0-del-c1", "bidi-and-separators", "printable-kept"],
)
def test_escape_writes_every_character_that_acts_on_a_terminal_visibly(text: str, shown: str) -> None:
    assert render.escape(text) == shown


def test_a_task_whose_message_holds_escapes_and_line_breaks_is_one_line_of_the_table() -> None:
    tasks = {TASK_ID: task(message="\x1b[2J\x1b[31mdisk failed\x1b[0m\r\nretrying\n")}
    lines = render.tasks_table(tasks).splitlines()
    assert len(lines) == 3  # header, the task, the footer
    assert lines[1].endswith("\\x1b[2J\\x1b[31mdisk failed\\x1b[0m\\r\\nretrying\\n")
    assert "\x1b" not in lines[1]
    assert "\r" not in lines[1]


def test_every_cell_is_escaped_not_only_the_message() -> None:
    tasks = {TASK_ID: task(verb="copy\x1bImage", subsystem="v\ndsm", tags=["a\tb"])}
    (row,) = render.tasks_table(tasks).splitlines()[1:-1]
    assert row.split() == [
        TASK_ID,
        "v\\ndsm",
        "copy\\x1bImage",
        "a\\tb",
        "running",
        "running",
        "40%",
        "0",
        "copying",
    ]


# -- plurals ------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "footer"), [(0, "(0 tasks)"), (1, "(1 task)"), (2, "(2 tasks)")])
def test_the_footer_counts_tasks_in_good_english(count: int, footer: str) -> None:
    tasks = {
        f"{i:08d}-0000-4000-8000-000000000000": task(f"{i:08d}-0000-4000-8000-000000000000")
        for i in range(count)
    }
    statuses = {
        task_id: {"taskState": "running", "taskResult": "", "code": 0, "message": ""} for task_id in tasks
    }
    info = {task_id: {"id": task_id, "verb": "copyImage"} for task_id in tasks}
    assert render.tasks_table(tasks).splitlines()[-1] == footer
    assert render.statuses_table(statuses).splitlines()[-1] == footer
    assert render.info_table(info).splitlines()[-1] == footer


# -- widths -------------------------------------------------------------------------------


def test_without_a_width_cells_stay_whole_however_long() -> None:
    message = "x" * 500
    table = render.tasks_table({TASK_ID: task(message=message)})
    assert table.splitlines()[1].endswith(message)


def test_with_a_width_every_line_fits_and_the_cut_cells_end_in_an_ellipsis() -> None:
    tasks = {
        TASK_ID: task(message="m" * 300, verb="v" * 60, tags=["t" * 40]),
        OTHER_ID: task(OTHER_ID, message="short"),
    }
    lines = render.tasks_table(tasks, width=120).splitlines()
    assert max(render.display_width(line) for line in lines) <= 120
    long_row = next(line for line in lines if line.startswith(TASK_ID))
    assert long_row.endswith("m\N{HORIZONTAL ELLIPSIS}")
    assert "v\N{HORIZONTAL ELLIPSIS}" in long_row
    assert len(lines) == 4


def test_the_task_id_and_the_headers_are_never_cut() -> None:
    lines = render.tasks_table({TASK_ID: task(message="m" * 300)}, width=100).splitlines()
    assert lines[0].split("  ")[0] == "TASK ID"
    assert all(word in lines[0] for word in render.TASK_HEADERS)
    assert lines[1].startswith(f"{TASK_ID}  ")


def test_the_widest_column_is_cut_first_and_short_ones_are_kept() -> None:
    table = render.table(("ID", "A", "B"), [("id", "a" * 10, "b" * 40)], width=40, whole=("ID",))
    _, row = table.splitlines()
    assert row == "id  " + "a" * 10 + "  " + "b" * 23 + "\N{HORIZONTAL ELLIPSIS}"
    assert render.display_width(row) == 40


def test_a_table_that_already_fits_is_not_changed_by_a_width() -> None:
    tasks = {TASK_ID: task()}
    assert render.tasks_table(tasks, width=200) == render.tasks_table(tasks)


def test_wide_characters_count_two_columns_when_aligning_and_cutting() -> None:
    table = render.table(("NAME", "NEXT"), [("卷卷卷", "x"), ("abc", "y")])
    first, second = table.splitlines()[1:]
    # Six columns of text, then the separator: the next column starts at column 8 on both lines.
    assert render.display_width(first[: first.index("x")]) == 8
    assert render.display_width(second[: second.index("y")]) == 8
    assert render.truncate("卷卷卷卷", 5) == "卷卷\N{HORIZONTAL ELLIPSIS}"


def test_truncate_keeps_text_that_fits_and_cuts_to_the_width_with_an_ellipsis() -> None:
    assert render.truncate("abcdef", 6) == "abcdef"
    assert render.truncate("abcdef", 4) == "abc\N{HORIZONTAL ELLIPSIS}"
    assert render.truncate("abcdef", 1) == "\N{HORIZONTAL ELLIPSIS}"


# -- records and JSON ---------------------------------------------------------------------


def test_record_aligns_keys_and_shows_data_as_indented_json() -> None:
    fields = {
        "id": TASK_ID,
        "tags": ["spm", "hsm"],
        "message": "a\x1bb",
        "progress": None,
        "data": {"disk": {"size": 5}},
    }
    assert render.record(fields) == "\n".join(
        [
            f"id:       {TASK_ID}",
            "tags:     spm,hsm",
            "message:  a\\x1bb",
            "progress: -",
            "data:     {",
            '            "disk": {',
            '              "size": 5',
            "            }",
            "          }",
        ]
    )


def test_record_shows_empty_data_as_an_empty_object() -> None:
    assert render.record({"id": TASK_ID, "data": {}}) == f"id:   {TASK_ID}\ndata: {{}}"


@pytest.mark.parametrize("pretty", [True, False], ids=["pretty", "compact"])
def test_to_json_escapes_terminal_characters_and_still_means_the_same(pretty: bool) -> None:
    value = {"message": "\x1b[31mred\x9b\u202e\u2028 üñï", "n": [1, 2]}
    text = render.to_json(value, pretty=pretty)
    assert json.loads(text) == value
    assert not any(char in text for char in "\x1b\x9b\u202e\u2028")
    assert (len(text.splitlines()) > 1) is pretty


def test_at_120_columns_a_verb_stays_whole_while_the_message_and_tags_are_cut() -> None:
    tasks = {TASK_ID: task(verb="downloadImage", message="m" * 300, tags=["gluster", "volume:" + "v" * 40])}
    _, row, _ = render.tasks_table(tasks, width=120).splitlines()
    assert render.display_width(row) <= 120
    assert "  downloadImage  " in row
    assert row.endswith("m\N{HORIZONTAL ELLIPSIS}")
