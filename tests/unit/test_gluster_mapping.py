"""Mapping gluster's tasks to records: verbs, tags, states of every status code, counters, quirks."""

from __future__ import annotations

from typing import Any

import pytest
from support.factories import make_record
from support.gluster import FIXTURES, Node, migration_xml

from bus_tasks.core.model import State
from bus_tasks.plugins.gluster import mapping
from bus_tasks.plugins.gluster.xml import ListedTask, parse_migration, parse_tasks

REBALANCE_ID = "1bea87af-d176-4044-b4a2-46724ab0f070"
REMOVE_ID = "5e7fb5b7-1e23-415c-9b3f-e7e7fd896ea1"
NODE_ID = "883626f8-4d29-4d02-8c5d-c9f48c5b2445"
FIXTURE_COUNTERS = {
    "filesScanned": 278,
    "filesMoved": 78,
    "filesFailed": 0,
    "filesSkipped": 0,
    "totalSizeMoved": 79872,
    "runtime": 10.2,
}


def _fixture_tasks() -> dict[str, ListedTask]:
    return {t.task_id: t for t in parse_tasks((FIXTURES / "glusterVolumeTasks.xml").read_text())}


def _rebalance(status_str: str, status: int = 1) -> ListedTask:
    return ListedTask("gv1", "Rebalance", REBALANCE_ID, status, status_str, ())


def _status(status_str: str, status: int, **counters: Any) -> Any:
    node = Node(status=status, status_str=status_str, **counters)
    return parse_migration(migration_xml("volRebalance", REBALANCE_ID, [node], node))


def test_the_fixture_s_remove_brick_maps_to_a_finished_record_with_commit_pending_and_vdsm_s_counters() -> (
    None
):
    task = _fixture_tasks()[REMOVE_ID]
    status = parse_migration((FIXTURES / "glusterVolumeRemoveBricksStatus.xml").read_text())

    assert mapping.desired(task, status) == mapping.Desired(
        task_id=REMOVE_ID,
        verb="removeBrick",
        tags=("gluster", "volume:gv1", "type:REMOVE_BRICK"),
        state=State.FINISHED,
        code=0,
        message="completed: migration complete, commit pending",
        data={
            "volume": "gv1",
            "type": "REMOVE_BRICK",
            "bricks": ["bricknode1:/gfs/b3"],
            "status": "completed",
            **FIXTURE_COUNTERS,
            "hosts": [{"name": "localhost", "id": NODE_ID, "status": "completed", **FIXTURE_COUNTERS}],
            "commitPending": True,
        },
    )


def test_the_fixture_s_rebalance_maps_with_the_status_call_s_state_over_the_listing_s() -> None:
    task = _fixture_tasks()[REBALANCE_ID]  # listed "in progress"; its status call says completed
    status = parse_migration((FIXTURES / "glusterVolumeRebalanceStatus.xml").read_text())

    assert mapping.desired(task, status) == mapping.Desired(
        task_id=REBALANCE_ID,
        verb="rebalance",
        tags=("gluster", "volume:gv1", "type:REBALANCE"),
        state=State.FINISHED,
        code=0,
        message="completed",
        data={
            "volume": "gv1",
            "type": "REBALANCE",
            "bricks": [],
            "status": "completed",
            **FIXTURE_COUNTERS,
            "hosts": [{"name": "localhost", "id": NODE_ID, "status": "completed", **FIXTURE_COUNTERS}],
        },
    )


def test_vdsm_s_inconsistent_fixture_is_read_by_status_str_not_by_the_status_integer() -> None:
    task = _fixture_tasks()["5e7fb5b7-1e23-415c-9b3f-e7e7fd896eae"]  # <status>1</status>, "completed"

    assert mapping.desired(task, None).state is State.FINISHED


@pytest.mark.parametrize(
    ("number", "status_str", "state", "code", "message"),
    [
        (0, "not started", State.INIT, 0, "not started"),
        (1, "in progress", State.RUNNING, 0, "in progress"),
        (2, "stopped", State.FAILED, 411, "Task is aborted: rebalance stopped"),
        (3, "completed", State.FINISHED, 0, "completed"),
        (4, "failed", State.FAILED, 100, "General Exception: gluster reports rebalance 'failed'"),
        (5, "fix-layout in progress", State.RUNNING, 0, "fix-layout in progress"),
        (6, "fix-layout stopped", State.FAILED, 411, "Task is aborted: rebalance fix-layout stopped"),
        (7, "fix-layout completed", State.FINISHED, 0, "fix-layout completed"),
        (
            8,
            "fix-layout failed",
            State.FAILED,
            100,
            "General Exception: gluster reports rebalance 'fix-layout failed'",
        ),
        (
            9,
            "reset due to replace-brick",
            State.FAILED,
            100,
            "General Exception: gluster reports rebalance 'reset due to replace-brick'",
        ),
        (
            10,
            "reset due to reset-brick",
            State.FAILED,
            100,
            "General Exception: gluster reports rebalance 'reset due to reset-brick'",
        ),
        (11, "unknown", State.UNKNOWN, 0, "unknown"),
    ],
)
def test_every_gluster_status_maps_to_the_state_gluster_md_gives_it(
    number: int, status_str: str, state: State, code: int, message: str
) -> None:
    want = mapping.desired(_rebalance(status_str, number), _status(status_str, number))

    assert (want.state, want.code, want.message, want.data["status"]) == (state, code, message, status_str)


@pytest.mark.parametrize(
    ("number", "state"), [(1, State.RUNNING), (3, State.FINISHED), (7, State.FINISHED), (99, State.UNKNOWN)]
)
def test_a_status_str_gluster_s_tables_lack_falls_back_on_the_status_integer(
    number: int, state: State
) -> None:
    assert mapping.desired(_rebalance("in a newer gluster's words", number), None).state is state


def test_a_remove_brick_in_progress_is_running_and_not_commit_pending() -> None:
    task = ListedTask("gv1", "Remove brick", REMOVE_ID, 1, "in progress", ("h:/b3", "h:/b4"))

    want = mapping.desired(task, _status("in progress", 1, files=3, lookups=10))

    assert (want.state, want.data["commitPending"], want.data["bricks"]) == (
        State.RUNNING,
        False,
        ["h:/b3", "h:/b4"],
    )


def test_a_remove_brick_s_skipped_files_folded_into_failures_by_the_cli_are_reported_as_gluster_counts_them() -> (
    None
):
    task = ListedTask("gv1", "Remove brick", REMOVE_ID, 3, "completed", ("h:/b3",))
    folded = Node(files=90, lookups=100, failures=10, skipped=0, status=3, status_str="completed")
    status = parse_migration(migration_xml("volRemoveBrick", None, [folded], folded))

    data = mapping.desired(task, status).data

    assert (data["filesFailed"], data["filesSkipped"], data["filesMoved"], data["filesScanned"]) == (
        10,
        0,
        90,
        100,
    )


def test_a_replace_brick_has_no_counters_and_its_own_verb() -> None:
    task = ListedTask("gv9", "Replace brick", REMOVE_ID, 1, "in progress", ())

    want = mapping.desired(task, None)

    assert (want.verb, want.tags, want.state) == (
        "replaceBrick",
        ("gluster", "volume:gv9", "type:REPLACE_BRICK"),
        State.RUNNING,
    )
    assert want.data == {"volume": "gv9", "type": "REPLACE_BRICK", "bricks": [], "status": "in progress"}


def test_an_unknown_task_type_is_refused_with_its_name() -> None:
    with pytest.raises(mapping.UnknownTaskType, match="'Tier migration'"):
        mapping.desired(ListedTask("gv1", "Tier migration", REMOVE_ID, 1, "in progress", ()), None)


def test_a_volume_name_too_long_for_a_tag_leaves_only_that_tag_out() -> None:
    name = "v" * 60

    assert mapping.tags_for(name, "REBALANCE") == ("gluster", "type:REBALANCE")


def test_changes_lists_only_the_fields_that_differ_and_never_the_tags() -> None:
    want = mapping.desired(_rebalance("in progress"), _status("in progress", 1, files=5))
    current = make_record(
        subsystem="gluster", tags=("retagged",), state=State.RUNNING, message="in progress", data=want.data
    )

    assert mapping.changes(current, want) == {}
    later = mapping.desired(_rebalance("in progress"), _status("in progress", 1, files=6))
    assert mapping.changes(current, later) == {"data": later.data}


def test_a_running_task_that_vanishes_is_failed_as_stopped() -> None:
    current = make_record(subsystem="gluster", state=State.RUNNING)

    assert mapping.vanished(current) == {
        "state": State.FAILED,
        "code": 411,
        "message": "Task is aborted: gluster no longer lists it (stopped)",
    }


def test_an_aborting_task_that_vanishes_was_stopped_by_request() -> None:
    current = make_record(subsystem="gluster", state=State.ABORTING)

    assert mapping.vanished(current)["message"] == "Task is aborted: stopped by request"


def test_a_completed_remove_brick_that_vanishes_stays_finished_and_is_no_longer_commit_pending() -> None:
    data = {"volume": "gv1", "type": "REMOVE_BRICK", "commitPending": True}
    current = make_record(subsystem="gluster", state=State.FINISHED, data=data)

    assert mapping.vanished(current) == {
        "data": {"volume": "gv1", "type": "REMOVE_BRICK", "commitPending": False},
        "message": "completed; gluster no longer lists it (committed, or stopped before commit)",
    }


def test_a_completed_rebalance_that_vanishes_changes_nothing() -> None:
    current = make_record(subsystem="gluster", state=State.FINISHED, data={"type": "REBALANCE"})

    assert mapping.vanished(current) == {}


def test_a_stop_s_answer_fails_the_task_with_its_final_counters() -> None:
    current = make_record(
        subsystem="gluster",
        state=State.ABORTING,
        data={"volume": "gv1", "type": "REMOVE_BRICK", "commitPending": False, "filesMoved": 1},
    )
    node = Node(files=233, lookups=300, size=3817472, status=2, status_str="stopped", runtime="4.00")
    status = parse_migration(migration_xml("volRemoveBrick", REMOVE_ID, [node], node))

    changes = mapping.stopped(current, status)

    counters = {
        "filesScanned": 300,
        "filesMoved": 233,
        "filesFailed": 0,
        "filesSkipped": 0,
        "totalSizeMoved": 3817472,
        "runtime": 4.0,
    }
    assert changes == {
        "state": State.FAILED,
        "code": 411,
        "message": "Task is aborted: stopped by request",
        "data": {
            "volume": "gv1",
            "type": "REMOVE_BRICK",
            "commitPending": False,
            "status": "stopped",
            **counters,
            "hosts": [{"name": "localhost", "id": NODE_ID, "status": "stopped", **counters}],
        },
    }
