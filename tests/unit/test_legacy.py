"""VDSM's shapes: TaskDetails, status, info, and the wrapped form (SPEC sections 5 and 7)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from support.factories import CREATED_AT, UPDATED_AT, make_record, records, task_id

from bus_tasks import codec
from bus_tasks.core.model import State, TaskRecord
from bus_tasks.errors import InvalidParams, TaskStateError, UnknownTask
from bus_tasks.protocol.shapes import record_from_details, task_details, task_info, task_status
from bus_tasks.protocol.vdsm import wrap, wrap_error

# SPEC section 5, TaskDetails, in its order.
TASK_DETAILS_KEYS = [
    "id",
    "taskID",
    "verb",
    "subsystem",
    "tags",
    "tag",
    "state",
    "taskState",
    "taskResult",
    "code",
    "message",
    "result",
    "progress",
    "data",
    "createdAt",
    "updatedAt",
]


def as_json(value: Any) -> Any:
    return orjson.loads(codec.dumps(value))


def test_task_details_has_exactly_the_spec_keys() -> None:
    assert list(task_details(make_record())) == TASK_DETAILS_KEYS


def test_task_details_merges_info_and_status_of_a_task() -> None:
    record = make_record(
        3,
        subsystem="gluster",
        verb="rebalance",
        tags=("gluster", "volume:gv1"),
        state=State.RECOVERED,
        code=4112,
        message="rolled back",
        result={"files": 10},
        progress=100,
        data={"volume": "gv1", "bricks": ["h1:/b1", "h2:/b2"]},
    )
    assert task_details(record) == {
        "id": task_id(3),
        "taskID": task_id(3),
        "verb": "rebalance",
        "subsystem": "gluster",
        "tags": ["gluster", "volume:gv1"],
        "tag": "gluster",
        "state": "recovered",
        "taskState": "finished",
        "taskResult": "cleanSuccess",
        "code": 4112,
        "message": "rolled back",
        "result": {"files": 10},
        "progress": 100,
        "data": {"volume": "gv1", "bricks": ["h1:/b1", "h2:/b2"]},
        "createdAt": CREATED_AT,
        "updatedAt": UPDATED_AT,
    }


def test_task_details_encode_to_json_with_utc_z_timestamps() -> None:
    details = as_json(task_details(make_record()))
    assert (details["createdAt"], details["updatedAt"]) == (
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:05:30.250000Z",
    )


def test_tag_is_the_first_tag() -> None:
    assert task_details(make_record(tags=("volume:gv1", "gluster")))["tag"] == "volume:gv1"


def test_tag_is_empty_for_an_untagged_task() -> None:
    details = task_details(make_record(tags=()))
    assert (details["tags"], details["tag"]) == ([], "")


@pytest.mark.parametrize("state", list(State))
def test_task_details_carry_the_internal_state_and_its_legacy_pair(state: State) -> None:
    details = task_details(make_record(state=state))
    assert (details["state"], details["taskState"], details["taskResult"]) == (
        state.value,
        *make_record(state=state).legacy_state,
    )


def test_task_status_is_vdsms_status() -> None:
    assert task_status(task_id(1), State.FAILED, 205, "Cannot create Logical Volume") == {
        "taskID": task_id(1),
        "taskState": "finished",
        "taskResult": "cleanFailure",
        "code": 205,
        "message": "Cannot create Logical Volume",
    }


def test_task_status_of_a_waiting_task_is_cleaning_without_result() -> None:
    assert task_status(task_id(1), State.WAITRECOVER, 0, "") == {
        "taskID": task_id(1),
        "taskState": "cleaning",
        "taskResult": "",
        "code": 0,
        "message": "",
    }


def test_task_info_is_id_and_verb() -> None:
    assert task_info(task_id(1), "createVolume") == {"id": task_id(1), "verb": "createVolume"}


# -- the wrapped form --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "key"),
    [
        ("getAllTasks", "tasks"),
        ("getAllTasksInfo", "allTasksInfo"),
        ("getAllTasksStatuses", "allTasksStatus"),
        ("getTaskStatus", "taskStatus"),
        ("getTaskInfo", "TaskInfo"),
    ],
)
def test_wrap_puts_the_result_under_vdsms_key(verb: str, key: str) -> None:
    payload = {task_id(1): {"id": task_id(1), "verb": "copyImage"}}
    assert wrap(verb, payload) == {"status": {"code": 0, "message": "OK"}, key: payload}


@pytest.mark.parametrize("verb", ["stopTask", "clearTask", "revertTask"])
def test_wrap_of_a_control_verb_is_the_status_alone(verb: str) -> None:
    assert wrap(verb, True) == {"status": {"code": 0, "message": "OK"}}


def test_wrap_returns_a_fresh_status_each_time() -> None:
    first = wrap("stopTask", True)
    first["status"]["code"] = 99
    assert wrap("stopTask", True) == {"status": {"code": 0, "message": "OK"}}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnknownTask(task_id(1)), {"code": 401, "message": f"Task id unknown: ('{task_id(1)}',)"}),
        (
            TaskStateError(task_id(1), "running"),
            {
                "code": 410,
                "message": f"Operation is not allowed in this task state: ('{task_id(1)}', 'running')",
            },
        ),
        (InvalidParams("tags: bad"), {"code": -32602, "message": "Invalid params: tags: bad"}),
    ],
)
def test_wrap_error_is_the_status_alone(error: Any, status: dict[str, Any]) -> None:
    assert wrap_error(error) == {"status": status}


# -- back to a record --------------------------------------------------------------------


def test_record_from_details_round_trips_task_details() -> None:
    record = make_record(
        tags=("gluster", "volume:gv1"),
        state=State.FAILED,
        code=7,
        result=[1, "a"],
        progress=55,
        data={"k": {"n": 1}},
    )
    assert record_from_details(task_details(record)) == record


def test_record_from_details_accepts_details_read_from_json() -> None:
    record = make_record(created_at="2024-05-01T14:00:00+02:00")
    assert record_from_details(as_json(task_details(record))) == record


@settings(max_examples=100, deadline=None)
@given(record=records)
def test_any_record_survives_task_details_through_json(record: TaskRecord) -> None:
    assert record_from_details(as_json(task_details(record))) == record
