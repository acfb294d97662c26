"""The aggregator's authorization policy over its real method table: a denied call answers
-32011 and has no effect, an allowed one runs; one audit line per control action; whom a call
is from (the broker's user_id, or a front door's client, believed from front doors alone)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from support.factories import make_event, task_id

from bus_tasks import names
from bus_tasks.aggregator.authorization import Authorization, caller_of
from bus_tasks.aggregator.methods import Dispatcher, Forward
from bus_tasks.aggregator.policy import Policies
from bus_tasks.authorization import Roles
from bus_tasks.core.model import State
from bus_tasks.core.view import Entry, TaskView
from bus_tasks.errors import PermissionDenied, from_wire
from bus_tasks.protocol.context import CallContext
from bus_tasks.protocol.methods import MethodName

ROLES = Roles.of(readers=["rita"], operators=["otto"], admins=["ada"])
RUNNING, FINISHED = task_id(1), task_id(2)

M = MethodName
# method -> params of a call that its method would serve (or forward) in the fixture's view
CALLS: dict[MethodName, dict[str, Any]] = {
    M.GET_ALL_TASKS: {},
    M.GET_ALL_TASKS_INFO: {"spUUID": "x"},
    M.GET_ALL_TASKS_STATUSES: {"spUUID": "x"},
    M.GET_TASK_CHANGES: {},
    M.GET_SUBSYSTEMS: {},
    M.GET_AGGREGATORS: {},
    M.GET_STATUS: {"taskID": RUNNING},
    M.GET_INFO: {"taskID": RUNNING},
    M.GET_DETAILS: {"taskID": RUNNING},
    M.STOP: {"taskID": RUNNING},
    M.REVERT: {"taskID": FINISHED},
    M.CLEAR: {"taskID": FINISHED},
    M.RETAG: {"taskID": RUNNING, "tags": ["new"]},
}
READS: set[MethodName] = {m for m in CALLS if m not in {M.STOP, M.REVERT, M.CLEAR, M.RETAG}}
ALLOWED: dict[str | None, set[MethodName]] = {
    "rita": READS,
    "otto": READS | {M.STOP, M.REVERT, M.CLEAR},
    "ada": set(CALLS),
    "mallory": set(),
    None: set(),
}


class Served:
    """A dispatcher with the authorization policy over a view of a running and a finished task."""

    def __init__(self) -> None:
        self.view = TaskView()
        self.view.apply(make_event(1, state=State.RUNNING))
        self.view.apply(make_event(2, state=State.FINISHED))
        self.cleared: list[Entry] = []
        self.dispatcher = Dispatcher(
            self.view, on_clear=self.cleared.append, feed=None, policy=Policies(Authorization(ROLES))
        )

    def call(self, identity: str | None, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        context = CallContext(identity=identity, door="amqp")
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        reply = self.dispatcher.handle(body, context)
        if reply.forward is not None:
            return {"forwarded": reply.forward}, reply
        return orjson.loads(reply.body or b""), reply


def test_every_method_is_in_the_table() -> None:
    assert set(CALLS) == set(MethodName)


@pytest.mark.parametrize("method", list(CALLS), ids=str)
@pytest.mark.parametrize("identity", list(ALLOWED), ids=repr)
def test_each_call_is_served_or_denied_as_the_table_says(identity: str | None, method: MethodName) -> None:
    served = Served()
    before = (served.view.revision, [entry.details for entry in served.view])

    answer, _ = served.call(identity, method, CALLS[method])

    if method in ALLOWED[identity]:
        assert "error" not in answer or answer["error"]["code"] != PermissionDenied.code
    else:
        who = identity or "anonymous"
        assert answer == {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32011, "message": f"Permission denied: {who} may not call {method}"},
        }
        assert served.cleared == []
        assert (served.view.revision, [entry.details for entry in served.view]) == before


def test_a_denied_error_comes_back_typed_in_the_client() -> None:
    error = from_wire({"code": -32011, "message": "Permission denied: rita may not call Task.stop"})
    assert isinstance(error, PermissionDenied)
    assert error.message == "Permission denied: rita may not call Task.stop"


def test_an_alias_is_judged_as_its_method() -> None:
    answer, _ = Served().call("rita", "stopTask", {"taskID": RUNNING})
    assert answer["error"]["message"] == "Permission denied: rita may not call Task.stop"


def test_an_operator_may_not_clear_with_force_an_admin_may() -> None:
    served = Served()
    denied, _ = served.call("otto", "Task.clear", {"taskID": RUNNING, "force": True})
    assert denied["error"] == {
        "code": -32011,
        "message": "Permission denied: otto may not call Task.clear(force)",
    }
    assert RUNNING in served.view

    allowed, _ = served.call("ada", "Task.clear", {"taskID": RUNNING, "force": True})
    assert allowed["result"] is True
    assert RUNNING not in served.view


def test_a_denied_stop_is_not_forwarded() -> None:
    served = Served()
    denied, reply = served.call("rita", "Task.stop", {"taskID": RUNNING})
    assert reply.forward is None
    assert denied["error"]["code"] == -32011
    allowed, _ = served.call("otto", "Task.stop", {"taskID": RUNNING})
    assert allowed == {"forwarded": Forward("stop", RUNNING, "vdsm")}


def test_each_member_of_a_batch_is_judged_alone() -> None:
    served = Served()
    body = orjson.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "Task.getStatus", "params": {"taskID": FINISHED}},
            {"jsonrpc": "2.0", "id": 2, "method": "Task.clear", "params": {"taskID": FINISHED}},
        ]
    )
    replies = [served.dispatcher.handle_member(m, CallContext("rita", "amqp")) for m in orjson.loads(body)]
    answers = [orjson.loads(r.body or b"") for r in replies]
    assert answers[0]["result"]["taskID"] == FINISHED
    assert answers[1]["error"]["code"] == -32011
    assert FINISHED in served.view


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bus_tasks.audit"]


def test_a_control_action_is_audited_in_one_line_reads_are_not(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bus_tasks.audit")
    served = Served()

    served.call("otto", "Task.clear", {"taskID": FINISHED})
    served.call("rita", "Task.clear", {"taskID": RUNNING})
    served.call(None, "Task.retag", {"taskID": RUNNING, "tags": ["x"]})
    served.call("ada", "Task.clear", {"taskID": RUNNING, "force": True})
    served.call("otto", "Task.getStatus", {"taskID": RUNNING})
    served.call("ada", "Task.clear", {"taskID": task_id(9)})

    assert audit_lines(caplog) == [
        f"audit identity=otto door=amqp method=Task.clear task={FINISHED} outcome=ok",
        f"audit identity=rita door=amqp method=Task.clear task={RUNNING} outcome=denied",
        f"audit identity=anonymous door=amqp method=Task.retag task={RUNNING} outcome=denied",
        f"audit identity=ada door=amqp method=Task.clear(force) task={RUNNING} outcome=ok",
        f"audit identity=ada door=amqp method=Task.clear task={task_id(9)} outcome=error",
    ]


def test_a_forwarded_action_is_audited_when_the_relay_tells_its_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bus_tasks.audit")
    served = Served()
    _, reply = served.call("otto", "Task.stop", {"taskID": RUNNING})
    assert audit_lines(caplog) == []  # not answered yet

    served.dispatcher.policy.served(
        CallContext("otto", "amqp"), reply.method, "timeout", 1.0, params=reply.params
    )

    assert audit_lines(caplog) == [
        f"audit identity=otto door=amqp method=Task.stop task={RUNNING} outcome=timeout"
    ]


# -- whom a call is from ------------------------------------------------------------------------

FRONT_DOORS = frozenset({"stomp-door"})
ASSERTED = {names.HEADER_DOOR: "stomp", names.HEADER_ON_BEHALF_OF: "engine-1"}


@pytest.mark.parametrize(
    ("user_id", "headers", "identity", "door"),
    [
        ("rita", {}, "rita", "amqp"),
        (None, {}, None, "amqp"),
        ("stomp-door", ASSERTED, "engine-1", "stomp"),
        ("stomp-door", {names.HEADER_DOOR: "http"}, None, "http"),  # its client gave no identity
        (
            "stomp-door",
            {names.HEADER_DOOR: b"stomp", names.HEADER_ON_BEHALF_OF: b"engine-1"},
            "engine-1",
            "stomp",
        ),
        ("mallory", ASSERTED, "mallory", "amqp"),  # not a front door: its own call
        (None, ASSERTED, None, "amqp"),
        ("stomp-door", {names.HEADER_DOOR: "smtp", names.HEADER_ON_BEHALF_OF: "x"}, "stomp-door", "amqp"),
    ],
)
def test_a_front_doors_client_is_believed_only_from_a_front_door(
    user_id: str | None, headers: dict[str, Any], identity: str | None, door: str
) -> None:
    context = caller_of(user_id, headers, front_doors=FRONT_DOORS, deadline=5.0)
    assert context == CallContext(identity=identity, door=door, deadline=5.0)  # type: ignore[arg-type]


def test_with_authorization_off_the_headers_are_not_read() -> None:
    context = caller_of("stomp-door", ASSERTED, front_doors=None, deadline=None)
    assert context == CallContext(identity="stomp-door", door="amqp")
