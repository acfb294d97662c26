"""One contract, four transports: memory://, fakeredis, the real Redis, the real RabbitMQ."""

from __future__ import annotations

import pytest
from support.brokers import System

from bus_tasks.core.model import State
from bus_tasks.errors import InvalidParameter, UnknownTask
from bus_tasks.testing import wait_until

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def populated(system: System) -> tuple[System, dict[str, str]]:
    """Two subsystems publish tasks with various tags; returns the system and name -> task id."""
    vdsm = system.publisher("vdsm")
    gluster = system.publisher("gluster")
    ids = {
        "spm_create": vdsm.create("createVolume", ["spm"]).id,
        "spm_copy": vdsm.create("copyImage", ["spm", "storage:sd1"], state=State.RUNNING).id,
        "hsm": vdsm.create("downloadImage", ["hsm"]).id,
        "untagged": vdsm.create("prepareImage", []).id,
        "rebalance": gluster.create("rebalance", ["gluster", "volume:gv1"], state=State.RUNNING).id,
        "remove_brick": gluster.create("removeBrick", ["gluster", "volume:gv2"]).id,
    }
    vdsm.finish(ids["spm_create"], result={"uuid": "x"})
    vdsm.fail(ids["hsm"], code=205, message="Cannot create Logical Volume")
    client = system.client()
    wait_until(
        lambda: (
            len(client.get_all_tasks()) == 6
            and client.get_task_status(ids["spm_create"])["taskState"] == "finished"
        ),
        timeout_s=10,
        what="six tasks in the view",
    )
    return system, ids


def test_get_all_tasks_without_tags_returns_every_task_of_every_subsystem(
    populated: tuple[System, dict[str, str]],
) -> None:
    system, ids = populated
    tasks = system.client().get_all_tasks()
    assert set(tasks) == set(ids.values())
    assert {t["subsystem"] for t in tasks.values()} == {"vdsm", "gluster"}


def test_get_all_tasks_with_one_tag_returns_exactly_the_tasks_carrying_it(
    populated: tuple[System, dict[str, str]],
) -> None:
    system, ids = populated
    client = system.client()
    assert set(client.get_all_tasks("gluster")) == {ids["rebalance"], ids["remove_brick"]}
    assert set(client.get_all_tasks(["spm"])) == {ids["spm_create"], ids["spm_copy"]}
    assert set(client.get_all_tasks(["pm"])) == set()  # exact match: VDSM's substring bug is not copied


def test_get_all_tasks_with_two_tags_returns_tasks_with_either(
    populated: tuple[System, dict[str, str]],
) -> None:
    system, ids = populated
    tasks = system.client().get_all_tasks(["hsm", "volume:gv1"])
    assert set(tasks) == {ids["hsm"], ids["rebalance"]}


def test_get_all_tasks_with_match_all_returns_tasks_with_every_tag(
    populated: tuple[System, dict[str, str]],
) -> None:
    system, ids = populated
    tasks = system.client().get_all_tasks(["gluster", "volume:gv2"], {"match": "all"})
    assert set(tasks) == {ids["remove_brick"]}


def test_task_details_merge_info_and_status_in_one_record(populated: tuple[System, dict[str, str]]) -> None:
    system, ids = populated
    task_id = ids["spm_create"]
    details = system.client().get_all_tasks()[task_id]
    assert details.pop("createdAt").endswith("Z")
    assert details.pop("updatedAt").endswith("Z")
    assert details == {
        "id": task_id,
        "taskID": task_id,
        "verb": "createVolume",
        "subsystem": "vdsm",
        "tags": ["spm"],
        "tag": "spm",
        "state": "finished",
        "taskState": "finished",
        "taskResult": "success",
        "code": 0,
        "message": "",
        "result": {"uuid": "x"},
        "progress": None,
        "data": {},
    }


def test_legacy_calls_return_only_spm_tasks_in_vdsm_shapes(populated: tuple[System, dict[str, str]]) -> None:
    system, ids = populated
    client = system.client()
    create, copy = ids["spm_create"], ids["spm_copy"]
    assert client.get_all_tasks_info() == {
        create: {"id": create, "verb": "createVolume"},
        copy: {"id": copy, "verb": "copyImage"},
    }
    assert client.get_all_tasks_statuses() == {
        create: {
            "taskID": create,
            "taskState": "finished",
            "taskResult": "success",
            "code": 0,
            "message": "",
        },
        copy: {"taskID": copy, "taskState": "running", "taskResult": "", "code": 0, "message": ""},
    }
    hsm = ids["hsm"]
    assert client.get_task_status(hsm) == {
        "taskID": hsm,
        "taskState": "finished",
        "taskResult": "cleanFailure",
        "code": 205,
        "message": "Cannot create Logical Volume",
    }
    assert client.get_task_info(hsm) == {"id": hsm, "verb": "downloadImage"}


def test_wrapped_facade_uses_vdsm_keys(populated: tuple[System, dict[str, str]]) -> None:
    system, ids = populated
    vdsm = system.client().vdsm
    info = vdsm.getAllTasksInfo()
    assert info["status"] == {"code": 0, "message": "OK"}
    assert set(info["allTasksInfo"]) == {ids["spm_create"], ids["spm_copy"]}
    assert set(vdsm.getAllTasksStatuses()["allTasksStatus"]) == {ids["spm_create"], ids["spm_copy"]}
    assert vdsm.getTaskInfo(ids["hsm"])["TaskInfo"] == {"id": ids["hsm"], "verb": "downloadImage"}
    assert vdsm.getTaskStatus(ids["hsm"])["taskStatus"]["taskResult"] == "cleanFailure"
    assert set(vdsm.getAllTasks(["gluster"])["tasks"]) == {ids["rebalance"], ids["remove_brick"]}
    assert vdsm.getTaskStatus(UNKNOWN_ID) == {
        "status": {"code": 401, "message": f"Task id unknown: ('{UNKNOWN_ID}',)"}
    }


def test_unknown_task_id_answers_401(system: System) -> None:
    client = system.client()
    with pytest.raises(UnknownTask) as caught:
        client.get_task_status(UNKNOWN_ID)
    assert (caught.value.code, caught.value.message) == (401, f"Task id unknown: ('{UNKNOWN_ID}',)")
    with pytest.raises(UnknownTask):
        client.get_task_info(UNKNOWN_ID)


def test_task_id_that_is_not_a_uuid_answers_1000(system: System) -> None:
    with pytest.raises(InvalidParameter) as caught:
        system.client().get_task_status("not-a-uuid")
    assert caught.value.code == 1000
    assert caught.value.message == "Invalid parameter: ('taskID', 'not-a-uuid')"


def test_retagging_a_task_moves_it_between_queries(system: System) -> None:
    vdsm = system.publisher("vdsm")
    task_id = vdsm.create("createVolume", ["spm"]).id
    client = system.client()
    wait_until(lambda: task_id in client.get_all_tasks("spm"), timeout_s=10, what="task tagged spm")
    vdsm.retag(task_id, ["hsm"])
    wait_until(lambda: task_id in client.get_all_tasks("hsm"), timeout_s=10, what="task tagged hsm")
    assert client.get_all_tasks("spm") == {}
    assert client.get_all_tasks_info() == {}
