"""The one hook that sees every call (bus_tasks.aggregator.policy), through the method table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from kombu.message import Message
from pydantic import BaseModel
from support.factories import make_event, task_id

from bus_tasks.aggregator.methods import Dispatcher, Forward
from bus_tasks.aggregator.policy import CallPolicy, Policies
from bus_tasks.core.model import State
from bus_tasks.core.view import Entry, TaskView
from bus_tasks.errors import BusTasksError, GeneralError
from bus_tasks.protocol.context import LOCAL, CallContext
from bus_tasks.protocol.methods import MethodName
from bus_tasks.protocol.params import ClearParams, GetAllTasksParams, TaskParams
from bus_tasks.transport.kombu.consumers import delivery_of

RUNNING = task_id(1)
FINISHED = task_id(2)
ALICE = CallContext(identity="alice", door="amqp", deadline=1_700_000_000.5)


@dataclass
class Recording(CallPolicy):
    """Remembers what it was asked and told; refuses the methods in ``refuse``."""

    refuse: frozenset[MethodName] = frozenset()
    admitted: list[tuple[CallContext, MethodName, BaseModel]] = field(default_factory=list)
    told: list[tuple[CallContext, str, str]] = field(default_factory=list)

    def admit(self, context: CallContext, method: MethodName, params: BaseModel) -> None:
        self.admitted.append((context, method, params))
        if method in self.refuse:
            raise GeneralError(message=f"General Exception: {context.identity} may not {method}")

    def served(
        self,
        context: CallContext,
        method: str,
        outcome: str,
        seconds: float,
        *,
        params: BaseModel | None = None,
    ) -> None:
        assert seconds >= 0
        self.told.append((context, method, outcome))


@pytest.fixture
def view() -> TaskView:
    view = TaskView()
    view.apply(make_event(1, state=State.RUNNING))
    view.apply(make_event(2, state=State.FINISHED))
    return view


def request(method: str, params: dict[str, Any] | None = None, request_id: int = 7) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})


def test_a_call_is_admitted_with_its_context_canonical_name_and_bound_params_then_told(
    view: TaskView,
) -> None:
    policy = Recording()
    dispatcher = Dispatcher(view, policy=policy)

    reply = dispatcher.handle(request("getTaskStatus", {"taskID": RUNNING}), ALICE)

    assert orjson.loads(reply.body or b"")["result"]["taskID"] == RUNNING
    assert policy.admitted == [(ALICE, MethodName.GET_STATUS, TaskParams(taskID=RUNNING))]
    assert policy.told == [(ALICE, "getTaskStatus", "ok")]


def test_a_call_without_a_context_is_a_local_one(view: TaskView) -> None:
    policy = Recording()
    Dispatcher(view, policy=policy).handle(request("Host.getAllTasks"))
    assert policy.admitted == [(LOCAL, MethodName.GET_ALL_TASKS, GetAllTasksParams())]
    assert CallContext(identity=None, door="local", deadline=None) == LOCAL


def test_a_refused_call_has_no_effect_and_is_answered_with_the_policys_error(view: TaskView) -> None:
    cleared: list[Entry] = []
    policy = Recording(refuse=frozenset({MethodName.CLEAR}))
    dispatcher = Dispatcher(view, on_clear=cleared.append, policy=policy)

    reply = dispatcher.handle(request("Task.clear", {"taskID": FINISHED}), ALICE)

    assert orjson.loads(reply.body or b"") == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": 100, "message": "General Exception: alice may not Task.clear"},
    }
    assert FINISHED in view
    assert cleared == []
    assert policy.admitted == [(ALICE, MethodName.CLEAR, ClearParams(taskID=FINISHED))]
    assert policy.told == [(ALICE, "Task.clear", "error")]


def test_a_refused_command_is_not_forwarded(view: TaskView) -> None:
    dispatcher = Dispatcher(view, policy=Recording(refuse=frozenset({MethodName.STOP})))
    allowed = Dispatcher(view, policy=Recording())

    refused = dispatcher.handle(request("stopTask", {"taskID": RUNNING}), ALICE)

    assert refused.forward is None
    assert orjson.loads(refused.body or b"")["error"]["code"] == 100
    assert allowed.handle(request("stopTask", {"taskID": RUNNING}), ALICE).forward == Forward(
        "stop", RUNNING, "vdsm"
    )


def test_a_forwarded_call_is_admitted_and_left_to_the_relay_to_tell(view: TaskView) -> None:
    policy = Recording()
    reply = Dispatcher(view, policy=policy).handle(request("Task.stop", {"taskID": RUNNING}), ALICE)
    assert reply.forward is not None
    assert policy.admitted == [(ALICE, MethodName.STOP, TaskParams(taskID=RUNNING))]
    assert policy.told == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        request("No.suchMethod"),
        request("Task.getStatus", {"taskID": RUNNING, "extra": 1}),
    ],
    ids=["parse-error", "unknown-method", "invalid-params"],
)
def test_a_call_that_reaches_no_method_is_told_but_never_admitted(view: TaskView, body: bytes) -> None:
    policy = Recording()
    Dispatcher(view, policy=policy).handle(body, ALICE)
    assert policy.admitted == []
    assert [(context, outcome) for context, _, outcome in policy.told] == [(ALICE, "error")]


def test_each_member_of_a_batch_is_admitted_on_its_own(view: TaskView) -> None:
    policy = Recording(refuse=frozenset({MethodName.CLEAR}))
    dispatcher = Dispatcher(view, policy=policy)
    members = [
        orjson.loads(request("Task.clear", {"taskID": FINISHED}, 1)),
        orjson.loads(request("getAllTasks")),
    ]

    replies = [dispatcher.handle_member(member, ALICE) for member in members]

    assert [orjson.loads(r.body or b"").get("error", {}).get("code") for r in replies] == [100, None]
    assert [method for _, method, _ in policy.admitted] == [MethodName.CLEAR, MethodName.GET_ALL_TASKS]
    assert FINISHED in view


def test_policies_are_asked_in_order_the_first_refusal_answers_and_all_are_told(view: TaskView) -> None:
    first, refusing, never = Recording(), Recording(refuse=frozenset({MethodName.GET_INFO})), Recording()
    dispatcher = Dispatcher(view, policy=Policies(first, refusing, never))

    dispatcher.handle(request("Task.getInfo", {"taskID": RUNNING}), ALICE)

    assert [len(p.admitted) for p in (first, refusing, never)] == [1, 1, 0]
    assert first.told == refusing.told == never.told == [(ALICE, "Task.getInfo", "error")]


def test_a_policy_that_crashes_answers_32603_and_the_call_has_no_effect(view: TaskView) -> None:
    class Broken(CallPolicy):
        def admit(self, context: CallContext, method: MethodName, params: BaseModel) -> None:
            raise RuntimeError("quota table unreadable")

    reply = Dispatcher(view, policy=Broken()).handle(request("Task.clear", {"taskID": FINISHED}), ALICE)

    assert orjson.loads(reply.body or b"")["error"] == {
        "code": -32603,
        "message": "Internal error: RuntimeError",
    }
    assert FINISHED in view


def test_the_default_policy_admits_everything_and_a_refusal_is_a_typed_error() -> None:
    CallPolicy().admit(ALICE, MethodName.RETAG, TaskParams(taskID=RUNNING))
    with pytest.raises(BusTasksError):
        Recording(refuse=frozenset({MethodName.RETAG})).admit(
            ALICE, MethodName.RETAG, TaskParams(taskID=RUNNING)
        )


@pytest.mark.parametrize(("properties", "user_id"), [({"user_id": "engine"}, "engine"), ({}, None)])
def test_a_delivery_carries_the_user_id_its_message_was_sent_with(
    properties: dict[str, Any], user_id: str | None
) -> None:
    message = Message(  # type: ignore[no-untyped-call]
        body=b"{}", properties=properties, delivery_info={"routing_key": "bus_tasks.rpc"}
    )
    assert delivery_of(message, stale=lambda: False).user_id == user_id
