"""A change its caller sends again after a failover (SPEC 17, issue 25): the same call key (the
correlation id and JSON-RPC id, as TasksClient and the front doors keep them), marked resent, is
answered as the first was, and carried out once; a new call is judged as always."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from support.brokers import System
from support.raw_rpc import RawCaller

from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

STOP, REVERT, CLEAR, RETAG = "Task.stop", "Task.revert", "Task.clear", "Task.retag"


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def system(request: pytest.FixtureRequest) -> System:
    return request.getfixturevalue(f"{request.param}_system")  # type: ignore[no-any-return]


@pytest.fixture
def caller(system: System) -> Iterator[RawCaller]:
    bus = system.broker.connection(confirm_publish=False)
    yield RawCaller(bus)
    bus.close()


class Owner:
    """The subsystem ``vdsm``, listening, recording the stops and reverts it carries out."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.publisher: TaskPublisher = system.publisher("vdsm")
        self.calls: list[tuple[str, str]] = []
        self.publisher.on_stop(lambda task_id: self.calls.append(("stop", task_id)))
        self.publisher.on_revert(lambda task_id: self.calls.append(("revert", task_id)))
        system.listen(self.publisher)

    def task(self, state: State) -> str:
        task_id = self.publisher.create("copyImage", ["spm"], state=state).id
        if state is State.FINISHED:
            self.publisher.finish(task_id)
        self.shown(task_id, state.value)
        return task_id

    def shown(self, task_id: str, state: str) -> None:
        with self.system.client() as client:
            wait_until(
                lambda: client.get_all_tasks().get(task_id, {}).get("state") == state,
                timeout_s=10,
                what=f"task {task_id} {state}",
            )


@pytest.fixture
def owner(system: System) -> Owner:
    return Owner(system)


def code_of(response: dict[str, object]) -> object:
    error = response.get("error")
    return error["code"] if isinstance(error, dict) else response.get("result")


def test_a_stop_sent_again_under_its_call_key_answers_true_and_the_task_is_stopped_once(
    owner: Owner, caller: RawCaller
) -> None:
    task_id = owner.task(State.RUNNING)
    key = uuid.uuid4().hex
    assert code_of(caller.call(key, STOP, {"taskID": task_id})) is True
    owner.shown(task_id, "aborting")
    # The reply was lost with a broker node: the same call again, marked resent. The view shows
    # the task aborting (a new stop would answer 411), the owner knows it carried this one out.
    assert code_of(caller.call(key, STOP, {"taskID": task_id}, resent=True)) is True
    assert owner.calls == [("stop", task_id)]
    # Another stop is judged as always: by the aggregator, and by the owner when marked resent.
    assert code_of(caller.call(uuid.uuid4().hex, STOP, {"taskID": task_id})) == 411
    assert code_of(caller.call(uuid.uuid4().hex, STOP, {"taskID": task_id}, resent=True)) == 411
    assert owner.calls == [("stop", task_id)]


def test_a_revert_sent_again_under_its_call_key_answers_true_and_the_task_is_reverted_once(
    owner: Owner, caller: RawCaller
) -> None:
    task_id = owner.task(State.FINISHED)
    key = uuid.uuid4().hex
    assert code_of(caller.call(key, REVERT, {"taskID": task_id})) is True
    owner.publisher.update(task_id, state=State.RECOVERING)  # the owner's revert under way
    owner.shown(task_id, "recovering")
    assert code_of(caller.call(key, REVERT, {"taskID": task_id}, resent=True)) is True
    assert owner.calls == [("revert", task_id)]
    assert code_of(caller.call(uuid.uuid4().hex, REVERT, {"taskID": task_id}, resent=True)) == 403


def test_a_retag_sent_again_under_its_call_key_answers_the_same_tags(owner: Owner, caller: RawCaller) -> None:
    task_id = owner.task(State.RUNNING)
    key = uuid.uuid4().hex
    first = caller.call(key, RETAG, {"taskID": task_id, "tags": ["a", "b"]})
    assert code_of(first) == ["a", "b"]
    assert caller.call(key, RETAG, {"taskID": task_id, "tags": ["a", "b"]}, resent=True) == first
    assert owner.system.aggregator.counts["control_answered_retag"] == 2


def test_a_clear_sent_again_under_its_call_key_answers_true_and_a_new_clear_of_the_task_401(
    owner: Owner, caller: RawCaller
) -> None:
    task_id = owner.task(State.FINISHED)
    key = uuid.uuid4().hex
    assert code_of(caller.call(key, CLEAR, {"taskID": task_id})) is True
    assert code_of(caller.call(key, CLEAR, {"taskID": task_id}, resent=True)) is True
    assert code_of(caller.call(uuid.uuid4().hex, CLEAR, {"taskID": task_id})) == 401
    assert owner.system.aggregator.counts["cleared"] == 1


def test_a_stop_sent_again_for_a_task_the_view_does_not_know_answers_401(
    owner: Owner, caller: RawCaller
) -> None:
    unknown = str(uuid.uuid4())
    assert code_of(caller.call(uuid.uuid4().hex, STOP, {"taskID": unknown}, resent=True)) == 401
    assert code_of(caller.call(uuid.uuid4().hex, REVERT, {"taskID": unknown}, resent=True)) == 401
    assert owner.calls == []


def test_a_stop_sent_again_for_a_task_cleared_since_goes_to_the_owner_of_its_tombstone(
    owner: Owner, caller: RawCaller
) -> None:
    task_id = owner.task(State.RUNNING)
    key = uuid.uuid4().hex
    assert code_of(caller.call(key, STOP, {"taskID": task_id})) is True
    owner.publisher.fail(task_id, code=411, message="Task is aborted")
    owner.shown(task_id, "failed")
    assert code_of(caller.call(uuid.uuid4().hex, CLEAR, {"taskID": task_id})) is True
    # The view holds only the tombstone now; its owner answers the repeat as before.
    assert code_of(caller.call(key, STOP, {"taskID": task_id}, resent=True)) is True
    assert owner.calls == [("stop", task_id)]
