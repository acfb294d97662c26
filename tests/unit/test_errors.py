"""Errors cross the wire as {"code", "message"} and come back as the same typed error (SPEC section 5)."""

from __future__ import annotations

import pytest

from bus_tasks import errors
from bus_tasks.errors import (
    BrokerUnavailable,
    BusTasksError,
    DeadlineExceeded,
    EventRejected,
    GeneralError,
    InternalError,
    InvalidParameter,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
    RemoteError,
    TaskAborted,
    TaskNotFinished,
    TaskStateError,
    UnknownTask,
    from_wire,
)

TASK = "6f1c2d3e-aaaa-4bbb-8ccc-0123456789ab"

# SPEC section 5: every code of the errors table, an error raised as the service raises it,
# and the message the engine reads.
CASES = [
    (401, UnknownTask(TASK), f"Task id unknown: ('{TASK}',)"),
    (403, TaskNotFinished(TASK, "running"), f"Task not finished: ('{TASK}', 'running')"),
    (
        410,
        TaskStateError(TASK, "running"),
        f"Operation is not allowed in this task state: ('{TASK}', 'running')",
    ),
    (411, TaskAborted(TASK, "aborting"), f"Task is aborted: ('{TASK}', 'aborting')"),
    (1000, InvalidParameter("taskID", "x"), "Invalid parameter: ('taskID', 'x')"),
    (100, GeneralError(TASK, "no answer"), f"General Exception: ('{TASK}', 'no answer')"),
    (-32700, ParseError("unexpected end of data"), "Parse error: unexpected end of data"),
    (-32600, InvalidRequest('"jsonrpc" must be "2.0"'), 'Invalid request: "jsonrpc" must be "2.0"'),
    (-32601, MethodNotFound("'nope'"), "Method not found: 'nope'"),
    (-32602, InvalidParams("tags: bad"), "Invalid params: tags: bad"),
    (-32603, InternalError("RuntimeError"), "Internal error: RuntimeError"),
]
IDS = [str(code) for code, _, _ in CASES]


@pytest.mark.parametrize(("code", "error", "message"), CASES, ids=IDS)
def test_an_error_has_its_code_and_vdsms_message(code: int, error: BusTasksError, message: str) -> None:
    assert error.to_wire() == {"code": code, "message": message}
    assert str(error) == message


@pytest.mark.parametrize(("code", "error", "message"), CASES, ids=IDS)
def test_from_wire_rebuilds_the_same_typed_error(code: int, error: BusTasksError, message: str) -> None:
    rebuilt = from_wire(error.to_wire())
    assert type(rebuilt) is type(error)
    assert (rebuilt.code, rebuilt.message, str(rebuilt)) == (code, message, message)
    assert rebuilt.to_wire() == {"code": code, "message": message}


def test_from_wire_of_an_unknown_code_gives_a_remote_error_keeping_the_code() -> None:
    rebuilt = from_wire({"code": 4112, "message": "brick is offline"})
    assert type(rebuilt) is RemoteError
    assert rebuilt.to_wire() == {"code": 4112, "message": "brick is offline"}
    assert isinstance(rebuilt, BusTasksError)


def test_from_wire_of_a_null_message_gives_an_empty_message() -> None:
    rebuilt = from_wire({"code": 401, "message": None})
    assert (type(rebuilt), rebuilt.message) == (UnknownTask, "")


@pytest.mark.parametrize("error", [{"code": "401", "message": "x"}, {"message": "x"}, {"code": None}, {}])
def test_from_wire_of_a_code_that_is_not_an_integer_gives_an_internal_remote_error(
    error: dict[str, object],
) -> None:
    rebuilt = from_wire(error)
    assert type(rebuilt) is RemoteError
    assert rebuilt.to_wire() == {"code": -32603, "message": f"malformed error object: {error!r}"}


def test_a_rebuilt_error_can_be_caught_as_the_class_raised_remotely() -> None:
    with pytest.raises(InvalidParameter):
        raise from_wire(InvalidParameter("tags", "a=b").to_wire())
    with pytest.raises(ValueError, match="Invalid parameter"):
        raise from_wire(InvalidParameter("tags", "a=b").to_wire())


def test_an_explicit_message_replaces_the_generated_one() -> None:
    error = InvalidParameter("task_id", TASK, message=f"Invalid parameter: task {TASK} exists")
    assert error.to_wire() == {"code": 1000, "message": f"Invalid parameter: task {TASK} exists"}


def test_an_error_without_args_is_its_title() -> None:
    assert GeneralError().to_wire() == {"code": 100, "message": "General Exception"}
    assert InternalError().to_wire() == {"code": -32603, "message": "Internal error"}


def test_deadline_exceeded_is_a_general_exception_naming_the_call() -> None:
    assert DeadlineExceeded("Host.getAllTasks", 2.5).to_wire() == {
        "code": 100,
        "message": "General Exception: no reply to Host.getAllTasks within 2.5s",
    }


def test_broker_unavailable_is_a_general_exception_naming_the_broker() -> None:
    assert BrokerUnavailable("amqp://guest:***@h//", "[Errno 111] Connection refused").to_wire() == {
        "code": 100,
        "message": "General Exception: broker amqp://guest:***@h// unreachable: [Errno 111] Connection refused",
    }


def test_event_rejected_keeps_its_reason_as_message() -> None:
    error = EventRejected("unknown schema 2")
    assert (error.reason, error.to_wire()) == (
        "unknown schema 2",
        {"code": 1000, "message": "unknown schema 2"},
    )


PLUGINS = "bus_tasks.plugins."


def _subclasses(cls: type[BusTasksError]) -> list[type[BusTasksError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_error_class_is_a_bus_tasks_error_documented_with_raised_when() -> None:
    # The library's errors live in bus_tasks.errors; a plugin's own (gluster's codes) in its package.
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__
    ]
    library = {
        c for c in [BusTasksError, *_subclasses(BusTasksError)] if not c.__module__.startswith(PLUGINS)
    }
    assert set(classes) == library
    every: list[type[BusTasksError]] = [BusTasksError, *_subclasses(BusTasksError)]
    undocumented = [c.__name__ for c in every if not (c.__doc__ or "").startswith("Raised ")]
    assert undocumented == []


def test_every_code_is_an_integer() -> None:
    classes: list[type[BusTasksError]] = [BusTasksError, *_subclasses(BusTasksError)]
    assert [c.__name__ for c in classes if type(c.code) is not int] == []
