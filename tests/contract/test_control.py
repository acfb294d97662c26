"""Task.stop, Task.revert, Task.clear through the bus, with VDSM's rules and codes."""

from __future__ import annotations

import threading

import pytest
from support.brokers import System
from support.timing import Stopwatch, assert_ended_by

from bus_tasks.core.model import State
from bus_tasks.errors import (
    GeneralError,
    TaskAborted,
    TaskNotFinished,
    TaskStateError,
    UnknownTask,
)
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

UNKNOWN_ID = "00000000-0000-4000-8000-000000000001"


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def system(request: pytest.FixtureRequest) -> System:
    """The aggregator on memory:// and on the real RabbitMQ."""
    return request.getfixturevalue(f"{request.param}_system")  # type: ignore[no-any-return]


class Recorder:
    """A subsystem's control handlers that remember what they were asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def stop(self, task_id: str) -> None:
        self.calls.append(("stop", task_id))

    def revert(self, task_id: str) -> None:
        self.calls.append(("revert", task_id))


def listening_vdsm(system: System) -> tuple[TaskPublisher, Recorder]:
    pub = system.publisher("vdsm")
    recorder = Recorder()
    pub.on_stop(recorder.stop)
    pub.on_revert(recorder.revert)
    system.listen(pub)
    return pub, recorder


def wait_state(system: System, task_id: str, state: str) -> None:
    client = system.client()
    wait_until(
        lambda: client.get_all_tasks().get(task_id, {}).get("state") == state,
        timeout_s=10,
        what=f"task {task_id} in state {state}",
    )


def test_stop_of_a_running_task_is_forwarded_and_the_task_moves_on_through_events(system: System) -> None:
    pub, recorder = listening_vdsm(system)
    task_id = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    wait_state(system, task_id, "running")
    client = system.client()

    assert client.stop_task(task_id) is True

    assert recorder.calls == [("stop", task_id)]
    wait_state(system, task_id, "aborting")
    assert client.get_task_status(task_id)["taskState"] == "aborting"
    pub.fail(task_id, code=411, message="Task is aborted")
    wait_state(system, task_id, "failed")
    assert client.get_task_status(task_id) == {
        "taskID": task_id,
        "taskState": "finished",
        "taskResult": "cleanFailure",
        "code": 411,
        "message": "Task is aborted",
    }


def test_second_stop_of_an_aborting_task_answers_411(system: System) -> None:
    pub, recorder = listening_vdsm(system)
    task_id = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    wait_state(system, task_id, "running")
    client = system.client()
    client.stop_task(task_id)
    wait_state(system, task_id, "aborting")

    with pytest.raises(TaskAborted) as caught:
        client.stop_task(task_id)

    assert caught.value.code == 411
    assert caught.value.message == f"Task is aborted: ('{task_id}', 'aborting')"
    assert recorder.calls == [("stop", task_id)]


def test_stop_of_a_done_task_succeeds_without_reaching_the_subsystem(system: System) -> None:
    pub, recorder = listening_vdsm(system)
    task_id = pub.create("copyImage", ["spm"]).id
    pub.finish(task_id)
    wait_state(system, task_id, "finished")

    assert system.client().stop_task(task_id) is True

    assert recorder.calls == []
    assert system.aggregator.counts["control_stop"] == 0


def test_revert_of_a_task_that_is_not_done_answers_403(system: System) -> None:
    pub, recorder = listening_vdsm(system)
    task_id = pub.create("createVolume", ["spm"], state=State.RUNNING).id
    wait_state(system, task_id, "running")

    with pytest.raises(TaskNotFinished) as caught:
        system.client().revert_task(task_id)

    assert caught.value.code == 403
    assert recorder.calls == []


def test_revert_of_a_done_task_is_forwarded_to_its_subsystem(system: System) -> None:
    pub, recorder = listening_vdsm(system)
    task_id = pub.create("createVolume", ["spm"]).id
    pub.finish(task_id)
    wait_state(system, task_id, "finished")

    assert system.client().revert_task(task_id) is True

    assert recorder.calls == [("revert", task_id)]
    pub.update(task_id, state=State.RECOVERED)
    wait_state(system, task_id, "recovered")
    assert system.client().get_task_status(task_id)["taskResult"] == "cleanSuccess"


def test_clear_of_a_task_that_is_not_done_answers_410_and_the_task_stays(system: System) -> None:
    pub, _ = listening_vdsm(system)
    task_id = pub.create("createVolume", ["spm"], state=State.RUNNING).id
    wait_state(system, task_id, "running")
    client = system.client()

    with pytest.raises(TaskStateError) as caught:
        client.clear_task(task_id)

    assert caught.value.code == 410
    assert caught.value.message == (f"Operation is not allowed in this task state: ('{task_id}', 'running')")
    assert set(client.get_all_tasks()) == {task_id}


def test_clear_of_a_done_task_removes_it_from_every_listing_and_from_its_subsystem(system: System) -> None:
    pub, _ = listening_vdsm(system)
    task_id = pub.create("createVolume", ["spm"]).id
    kept = pub.create("copyImage", ["spm"]).id
    finished = pub.finish(task_id)
    wait_state(system, task_id, "finished")
    client = system.client()

    assert client.clear_task(task_id) is True

    assert set(client.get_all_tasks()) == {kept}
    assert set(client.get_all_tasks_info()) == {kept}
    assert set(client.get_all_tasks_statuses()) == {kept}
    with pytest.raises(UnknownTask):
        client.get_task_status(task_id)
    wait_until(lambda: task_id not in pub, timeout_s=10, what="subsystem dropped its copy")
    # A late re-send of the task's last event never brings it back.
    pub.adopt(finished)
    pub.announce()
    pub.update(kept, message="after the late event")
    wait_until(
        lambda: client.get_all_tasks()[kept]["message"] == "after the late event",
        timeout_s=10,
        what="later event applied",
    )
    assert set(client.get_all_tasks()) == {kept}


def test_control_commands_for_an_unknown_task_answer_401(system: System) -> None:
    client = system.client()
    for call in (client.stop_task, client.revert_task, client.clear_task):
        with pytest.raises(UnknownTask) as caught:
            call(UNKNOWN_ID)
        assert (caught.value.code, caught.value.message) == (401, f"Task id unknown: ('{UNKNOWN_ID}',)")


def test_stop_unanswered_by_the_subsystem_gives_100_before_the_deadline_while_other_calls_are_served(
    system: System,
) -> None:
    pub = system.publisher("vdsm")  # never listens: its subsystem is "down"
    task_id = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    wait_state(system, task_id, "running")
    outcome: list[BaseException] = []
    finished = threading.Event()
    watch = Stopwatch()

    def stop() -> None:
        client = system.client(timeout_s=3.0)
        try:
            with watch:
                client.stop_task(task_id)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            finished.set()

    waiter = threading.Thread(target=stop)
    waiter.start()
    wait_until(lambda: system.aggregator.counts["control_stop"] == 1, timeout_s=10, what="stop forwarded")
    # While the stop waits for its subsystem, the aggregator keeps answering.
    assert set(system.client().get_all_tasks()) == {task_id}
    assert not finished.is_set()
    waiter.join(10.0)

    assert len(outcome) == 1
    assert isinstance(outcome[0], GeneralError)  # the aggregator's answer, not DeadlineExceeded
    assert outcome[0].code == 100
    assert outcome[0].message.startswith("General Exception: ")
    # Shortly before the caller's 3 s deadline: it waited for the subsystem almost that long.
    assert_ended_by(watch, 3.0, not_before_s=3.0 - 0.5)


def test_clear_while_the_subsystem_is_offline_stays_cleared_when_it_comes_back(system: System) -> None:
    pub = system.publisher("vdsm")  # offline: not consuming its control queue
    task_id = pub.create("createVolume", ["spm"]).id
    pub.finish(task_id)
    wait_state(system, task_id, "finished")
    client = system.client()

    assert client.clear_task(task_id) is True
    assert client.get_all_tasks() == {}

    system.listen(pub)  # back online: it re-announces its tasks, then reads the clear
    wait_until(lambda: task_id not in pub, timeout_s=10, what="subsystem learned of the clear")
    other = pub.create("copyImage", ["spm"]).id
    wait_until(lambda: other in client.get_all_tasks(), timeout_s=10, what="a later task listed")
    assert set(client.get_all_tasks()) == {other}


def test_vdsm_facade_wraps_control_results_and_errors(system: System) -> None:
    pub, _ = listening_vdsm(system)
    running = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    done = pub.create("createVolume", ["spm"]).id
    pub.finish(done)
    wait_state(system, done, "finished")
    vdsm = system.client().vdsm

    assert vdsm.clearTask(running) == {
        "status": {
            "code": 410,
            "message": f"Operation is not allowed in this task state: ('{running}', 'running')",
        }
    }
    assert vdsm.stopTask(running) == {"status": {"code": 0, "message": "OK"}}
    assert vdsm.revertTask(done) == {"status": {"code": 0, "message": "OK"}}
    assert vdsm.clearTask(done) == {"status": {"code": 0, "message": "OK"}}
    assert vdsm.clearTask(done) == {"status": {"code": 401, "message": f"Task id unknown: ('{done}',)"}}
