"""``bus-tasks demo``: the whole system in one process, and what it prints."""

from __future__ import annotations

import re
import subprocess

import pytest
from support.cli_helpers import parse_table, run_cli

SPM_VERBS = {"createVolume", "copyImage", "deleteImage", "moveImage"}
HSM_VERBS = {"downloadImage", "prepareImage"}
EVERY_TASK = "getAllTasks(): every task, from every subsystem"
GLUSTER = 'getAllTasks(tags=["gluster"])'
INFO = "getAllTasksInfo(): legacy, spm tasks only"
STATUSES = "getAllTasksStatuses(): legacy, spm tasks only"
ENGINE_LOOP = "the engine's loop: poll getAllTasksStatuses, clear what finished"
AT_THE_END = "getAllTasks() at the end"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One run of ``bus-tasks demo``, shared by the tests of this module."""
    return run_cli("demo", cwd=tmp_path_factory.mktemp("demo"), timeout_s=120)


@pytest.fixture(scope="module")
def sections(demo: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Section title -> its text; a ``Task.stop(<id>)`` title is keyed ``Task.stop(<id>)``."""
    assert (demo.returncode, demo.stderr) == (0, "")
    chunks = demo.stdout.split("\n== ")
    assert chunks[0] == ""
    parsed = {}
    for chunk in chunks[1:]:
        title, _, body = chunk.partition("\n")
        parsed[re.sub(r"^Task\.stop\([0-9a-f-]{36}\)$", "Task.stop(<id>)", title)] = body.strip("\n")
    return parsed


def test_demo_exits_zero_and_prints_every_section_in_order(sections: dict[str, str]) -> None:
    assert list(sections) == [
        EVERY_TASK,
        GLUSTER,
        'getAllTasks(tags=["spm", "hsm"]): any of the tags',
        INFO,
        STATUSES,
        "Task.stop(<id>)",
        ENGINE_LOOP,
        "the rest: clear every done task, whatever its subsystem",
        AT_THE_END,
    ]
    assert sections["Task.stop(<id>)"] == "-> True"


def test_demo_lists_tasks_of_every_subsystem_first(sections: dict[str, str]) -> None:
    rows, count = parse_table(sections[EVERY_TASK])
    assert count == len(rows) == 10
    assert {(row["SUBSYSTEM"], row["VERB"]) for row in rows} == {
        ("vdsm", verb) for verb in SPM_VERBS | HSM_VERBS
    } | {("gluster", "rebalance")}


def test_demo_gluster_section_lists_only_the_rebalance_tasks(sections: dict[str, str]) -> None:
    rows, count = parse_table(sections[GLUSTER])
    every, _ = parse_table(sections[EVERY_TASK])
    assert count == len(rows) == 2
    assert {(row["SUBSYSTEM"], row["VERB"], row["TAGS"]) for row in rows} == {
        ("gluster", "rebalance", "gluster,volume:gv1"),
        ("gluster", "rebalance", "gluster,volume:gv2"),
    }
    assert {row["TASK ID"] for row in rows} == {
        row["TASK ID"] for row in every if row["SUBSYSTEM"] == "gluster"
    }


def test_demo_legacy_sections_list_the_spm_tasks_and_no_hsm_task(sections: dict[str, str]) -> None:
    every, _ = parse_table(sections[EVERY_TASK])
    info, info_count = parse_table(sections[INFO])
    statuses, statuses_count = parse_table(sections[STATUSES])
    spm_ids = {row["TASK ID"] for row in every if "spm" in row["TAGS"].split(",")}
    assert {row["TASK ID"]: row["VERB"] for row in info} == {
        row["TASK ID"]: row["VERB"] for row in every if row["TASK ID"] in spm_ids
    }
    assert {row["VERB"] for row in info} == SPM_VERBS
    assert info_count == statuses_count == len(spm_ids) == 6
    assert {row["TASK ID"] for row in statuses} == spm_ids


def test_demo_engine_loop_clears_until_nothing_is_left(sections: dict[str, str]) -> None:
    lines = sections[ENGINE_LOOP].splitlines()
    assert re.fullmatch(r"round 0: 6 spm tasks \(.*\); clearing \d+", lines[0])
    assert re.fullmatch(rf"round {len(lines) - 1}: nothing left \(\d+\.\d\ds\)", lines[-1])


def test_demo_ends_with_no_task_left(sections: dict[str, str]) -> None:
    rows, count = parse_table(sections[AT_THE_END])
    assert (rows, count) == ([], 0)
    assert sections[AT_THE_END].splitlines()[-1] == "(0 tasks)"
