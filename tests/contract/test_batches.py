"""JSON-RPC 2.0 batches on the RPC queue (SPEC 9), on every transport.

VDSM's own client sends every call as a one-element batch and matches replies by id: without
batches, no VDSM client works.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from support.brokers import Broker, System, SystemFactory
from support.raw_rpc import RawCaller

from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.core.model import State
from bus_tasks.errors import GeneralError, InvalidRequest, UnknownTask
from bus_tasks.testing import wait_until

TIMEOUT_S = 10.0
UNKNOWN = "2b8f5c0e-0000-4000-8000-000000000000"


def call(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def notice(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params or {}}


def send(caller: RawCaller, members: Any, *, expiration_s: float = TIMEOUT_S) -> Any:
    [reply] = caller.wait([caller.send(json.dumps(members).encode(), expiration_s=expiration_s)])
    return reply


def in_view(system: System, *tasks: str) -> None:
    """Wait until the aggregator has applied the tasks' events (events and requests are separate
    queues: which the aggregator reads first is not ordered)."""
    wait_until(
        lambda: all(t in system.aggregator.view for t in tasks), timeout_s=TIMEOUT_S, what="tasks applied"
    )


def by_id(replies: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {reply["id"]: reply for reply in replies}


def test_a_one_element_batch_as_vdsms_client_sends_it_gets_a_one_element_array(system: System) -> None:
    pub = system.publisher("vdsm")
    task = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    in_view(system, task)
    caller = RawCaller(system.broker.connection(confirm_publish=False))

    reply = send(caller, [call("6f0c1d9e-vdsm", "Host.getAllTasksStatuses")])

    assert isinstance(reply, list)
    [response] = reply
    assert response["jsonrpc"] == "2.0"
    assert response["id"] == "6f0c1d9e-vdsm"
    assert set(response["result"]) == {task}


def test_a_mixed_batch_answers_each_call_by_id_none_for_notifications_and_an_error_for_a_non_object(
    system: System,
) -> None:
    pub = system.publisher("vdsm")
    task = pub.create("copyImage", ["spm"]).id
    in_view(system, task)
    caller = RawCaller(system.broker.connection(confirm_publish=False))

    reply = send(
        caller,
        [
            call(1, "Task.getInfo", {"taskID": task}),
            notice("Host.getAllTasks"),
            call("two", "Host.rmAllTasks"),
            5,
            call(3, "Task.getStatus", {"taskID": UNKNOWN}),
            call(4, "Task.getStatus", {"taskID": "not-a-uuid"}),
        ],
    )

    assert len(reply) == 5  # the notification gets none
    responses = by_id([r for r in reply if r["id"] is not None])
    assert responses[1]["result"] == {"id": task, "verb": "copyImage"}
    assert responses["two"]["error"]["code"] == -32601
    assert responses[3]["error"] == {"code": 401, "message": f"Task id unknown: ('{UNKNOWN}',)"}
    assert responses[4]["error"]["code"] == 1000
    [non_object] = [r for r in reply if r["id"] is None]
    assert non_object["error"]["code"] == -32600


def test_a_batch_of_only_notifications_gets_no_reply_message_at_all(system: System) -> None:
    caller = RawCaller(system.broker.connection(confirm_publish=False))
    silent = caller.send(json.dumps([notice("Host.getAllTasks"), notice("Task.getStatus")]).encode())
    # The RPC queue is served in order: once a later request is answered, the batch was served.
    later = caller.send(json.dumps(call(9, "Host.getAllTasks")).encode())

    caller.wait([later])

    assert not caller.arrived(silent)


def test_an_empty_batch_gets_one_invalid_request_error_with_a_null_id(system: System) -> None:
    caller = RawCaller(system.broker.connection(confirm_publish=False))

    reply = send(caller, [])

    assert reply == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Invalid request: an empty batch"},
    }


def test_a_batch_over_the_call_limit_or_the_size_limit_gets_one_clear_error(
    memory_broker: Broker, start_system: SystemFactory
) -> None:
    system = start_system(memory_broker, policy=AggregatorPolicy(max_batch_calls=3, max_request_bytes=2048))
    caller = RawCaller(system.broker.connection(confirm_publish=False))

    too_many = send(caller, [call(i, "Host.getAllTasks") for i in range(4)])
    too_large = send(caller, [call(1, "Host.getAllTasks", {"tags": ["x" * 60] * 32})])

    assert too_many["id"] is None
    assert too_many["error"] == {
        "code": -32600,
        "message": "Invalid request: a batch of 4 calls is more than the 3 allowed",
    }
    assert too_large["error"]["code"] == -32600
    assert "too large" in too_large["error"]["message"]
    assert len(send(caller, [call(i, "Host.getAllTasks") for i in range(3)])) == 3  # at the limit: served


def test_a_batch_mixing_a_forwarded_stop_with_reads_is_answered_once_every_member_is(system: System) -> None:
    pub = system.publisher("vdsm", listen=True)
    stopped: list[str] = []
    pub.on_stop(stopped.append)
    task = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    in_view(system, task)
    caller = RawCaller(system.broker.connection(confirm_publish=False))

    reply = send(caller, [call("stop", "Task.stop", {"taskID": task}), call("read", "Host.getAllTasksInfo")])

    responses = by_id(reply)
    assert responses["stop"]["result"] is True
    assert responses["read"]["result"] == {task: {"id": task, "verb": "copyImage"}}
    assert stopped == [task]


def test_a_stop_in_a_batch_that_its_subsystem_never_answers_gets_100_and_the_rest_is_answered_in_time(
    memory_system: System,
) -> None:
    pub = memory_system.publisher("vdsm")  # not listening: nobody answers the stop
    task = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    in_view(memory_system, task)
    caller = RawCaller(memory_system.broker.connection(confirm_publish=False))
    began = time.monotonic()

    reply = send(
        caller,
        [call("stop", "Task.stop", {"taskID": task}), call("read", "Host.getAllTasks")],
        expiration_s=1.5,
    )

    elapsed = time.monotonic() - began
    responses = by_id(reply)
    assert responses["stop"]["error"]["code"] == 100
    assert set(responses["read"]["result"]) == {task}
    assert 1.0 <= elapsed <= 1.5 + 2.0  # just before the caller's deadline, as a single stop


def test_the_client_sends_a_batch_and_gets_each_outcome_in_order(system: System) -> None:
    pub = system.publisher("vdsm")
    task = pub.create("copyImage", ["spm"]).id
    in_view(system, task)
    client = system.client()

    outcomes = client.batch(
        [
            ("Task.getInfo", {"taskID": task}),
            ("Task.getStatus", {"taskID": UNKNOWN}),
            ("Host.getAllTasks", {"tags": ["spm"]}),
        ]
    )

    assert [o.method for o in outcomes] == ["Task.getInfo", "Task.getStatus", "Host.getAllTasks"]
    assert outcomes[0].result() == {"id": task, "verb": "copyImage"}
    assert isinstance(outcomes[1].error, UnknownTask)
    with pytest.raises(UnknownTask):
        outcomes[1].result()
    assert set(outcomes[2].result()) == {task}


def test_the_client_raises_the_error_a_whole_batch_was_answered_with(
    memory_broker: Broker, start_system: SystemFactory
) -> None:
    system = start_system(memory_broker, policy=AggregatorPolicy(max_batch_calls=1))
    with pytest.raises(InvalidRequest, match="more than the 1 allowed"):
        system.client().batch([("Host.getAllTasks", None), ("Host.getAllTasks", None)])


def test_concurrent_batches_and_single_calls_are_each_answered_to_their_own_caller(system: System) -> None:
    pub = system.publisher("vdsm")
    tasks = {pub.create("copyImage", ["spm"]).id for _ in range(5)}
    in_view(system, *tasks)
    wait_until(
        lambda: set(system.client().get_all_tasks()) == tasks, timeout_s=TIMEOUT_S, what="5 tasks listed"
    )
    errors: list[BaseException] = []

    def poll(batch: bool) -> None:
        client = system.client()
        try:
            for _ in range(10):
                if batch:
                    [outcome] = client.batch([("Host.getAllTasksStatuses", None)])
                    assert set(outcome.result()) == tasks
                else:
                    assert set(client.get_all_tasks_statuses()) == tasks
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=poll, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert not any(t.is_alive() for t in threads)


def test_a_batch_member_that_fails_does_not_hide_the_typed_error_of_another(memory_system: System) -> None:
    outcomes = memory_system.client().batch(
        [("Task.stop", {"taskID": UNKNOWN}), ("Task.clear", {"taskID": UNKNOWN})]
    )
    assert all(isinstance(o.error, UnknownTask) for o in outcomes)
    assert not any(isinstance(o.error, GeneralError) for o in outcomes)
