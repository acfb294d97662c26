"""JSON-RPC 2.0 dispatch over the view: every method and alias, results, errors (SPEC section 5)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from support.factories import make_record, task_id

from bus_tasks import codec
from bus_tasks.aggregator.methods import Dispatcher, Forward, Reply
from bus_tasks.core.model import Event, State, TaskRecord
from bus_tasks.core.view import Entry, TaskView, Tombstone
from bus_tasks.protocol import shapes
from bus_tasks.protocol.methods import ALIASES, MethodName
from bus_tasks.protocol.params import TaskParams

RUNNING = task_id(1)  # vdsm, running, spm
FINISHED = task_id(2)  # vdsm, finished, spm + storage:sd1
ABORTING = task_id(3)  # vdsm, aborting, spm
REBALANCE = task_id(4)  # gluster, running, gluster + volume:gv1
REMOVE_BRICK = task_id(5)  # gluster, failed, gluster + volume:gv2
NEAR_SPM = task_id(6)  # vdsm, running, tags that look like spm but are not
UNTAGGED = task_id(7)  # vdsm, recovered, no tags
UNKNOWN = task_id(99)

RECORDS: dict[str, TaskRecord] = {
    RUNNING: make_record(1, state=State.RUNNING, tags=("spm",), verb="createVolume", progress=30),
    FINISHED: make_record(2, state=State.FINISHED, tags=("spm", "storage:sd1"), result={"uuid": "v1"}),
    ABORTING: make_record(3, state=State.ABORTING, tags=("spm",), message="aborting"),
    REBALANCE: make_record(
        4,
        subsystem="gluster",
        verb="rebalance",
        state=State.RUNNING,
        tags=("gluster", "volume:gv1"),
        data={"volume": "gv1", "filesScanned": 120},
    ),
    REMOVE_BRICK: make_record(
        5,
        subsystem="gluster",
        verb="removeBrick",
        state=State.FAILED,
        code=4112,
        message="brick is offline",
        tags=("gluster", "volume:gv2"),
    ),
    NEAR_SPM: make_record(6, tags=("SPM", "pm", "spm2", "xspm", "spm:x")),
    UNTAGGED: make_record(7, state=State.RECOVERED, tags=(), verb="prepareImage"),
}


@pytest.fixture
def view() -> TaskView:
    view = TaskView(clock=lambda: 500.0)
    for record in RECORDS.values():
        view.apply(Event(event="updated", seq=10, task=record))
    return view


@pytest.fixture
def cleared() -> list[tuple[str, Tombstone]]:
    return []


@pytest.fixture
def dispatcher(view: TaskView, cleared: list[tuple[str, Tombstone]]) -> Dispatcher:
    return Dispatcher(view, on_clear=lambda entry: cleared.append((entry.id, view.tombstones[entry.id])))


def request(method: Any, params: Any = None, request_id: Any = 7, **extra: Any) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    body.update(extra)
    return orjson.dumps(body)


def call(dispatcher: Dispatcher, method: str, params: Any = None, request_id: Any = 7) -> dict[str, Any]:
    """The decoded reply body of one request (which must not be forwarded)."""
    reply = dispatcher.handle(request(method, params, request_id))
    assert reply.forward is None
    assert reply.body is not None
    return dict(orjson.loads(reply.body))


def result(dispatcher: Dispatcher, method: str, params: Any = None) -> Any:
    reply = call(dispatcher, method, params)
    assert set(reply) == {"jsonrpc", "id", "result"}, reply
    return reply["result"]


def error_reply(code: int, message: str, request_id: Any = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def details_of(*task_ids: str) -> dict[str, Any]:
    return {i: orjson.loads(codec.dumps(shapes.task_details(RECORDS[i]))) for i in task_ids}


def status_of(task: str) -> dict[str, Any]:
    record = RECORDS[task]
    task_state, task_result = record.legacy_state
    return {
        "taskID": task,
        "taskState": task_state,
        "taskResult": task_result,
        "code": record.code,
        "message": record.message,
    }


BUS_TASKS_METHODS = {
    "Task.getDetails",
    "Task.retag",
    "Host.getSubsystems",
    "Host.getAggregators",
    "Host.getTaskChanges",
}
TASK_METHODS = ("Task.getStatus", "Task.getInfo", "Task.getDetails", "Task.stop", "Task.clear", "Task.revert")


def both_names(canonical: str) -> list[Any]:
    """The method's name, and its flat legacy alias where VDSM had one."""
    alias = ALIASES.get(MethodName(canonical)) if canonical in set(MethodName) else None
    names = [canonical] + ([alias] if alias else [])
    return [pytest.param(name, id=name) for name in names]


# -- Host.getAllTasks --------------------------------------------------------------------


@pytest.mark.parametrize("method", both_names("Host.getAllTasks"))
def test_get_all_tasks_without_params_returns_every_task_of_every_subsystem(
    dispatcher: Dispatcher, method: str
) -> None:
    assert result(dispatcher, method) == details_of(*RECORDS)


def test_get_all_tasks_result_is_the_whole_task_details(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "Host.getAllTasks", {"tags": "volume:gv1"}) == {
        REBALANCE: {
            "id": REBALANCE,
            "taskID": REBALANCE,
            "verb": "rebalance",
            "subsystem": "gluster",
            "tags": ["gluster", "volume:gv1"],
            "tag": "gluster",
            "state": "running",
            "taskState": "running",
            "taskResult": "",
            "code": 0,
            "message": "running job 1 of 1",
            "result": "",
            "progress": None,
            "data": {"volume": "gv1", "filesScanned": 120},
            "createdAt": "2024-05-01T12:00:00Z",
            "updatedAt": "2024-05-01T12:05:30.250000Z",
        }
    }


@pytest.mark.parametrize("tags", [None, "", []], ids=["null", "empty-string", "empty-list"])
def test_get_all_tasks_with_empty_tags_means_no_filter(dispatcher: Dispatcher, tags: Any) -> None:
    assert result(dispatcher, "Host.getAllTasks", {"tags": tags}) == details_of(*RECORDS)


def test_get_all_tasks_with_one_tag_as_a_string_returns_the_tasks_carrying_it(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "getAllTasks", {"tags": "gluster"}) == details_of(REBALANCE, REMOVE_BRICK)


def test_get_all_tasks_with_one_tag_in_a_list_returns_the_tasks_carrying_it(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "getAllTasks", {"tags": ["spm"]}) == details_of(RUNNING, FINISHED, ABORTING)


def test_get_all_tasks_matches_tags_exactly_not_by_substring(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "getAllTasks", {"tags": ["pm"]}) == details_of(NEAR_SPM)
    assert result(dispatcher, "getAllTasks", {"tags": ["sp"]}) == {}


def test_get_all_tasks_with_two_tags_returns_tasks_with_either(dispatcher: Dispatcher) -> None:
    tags = ["storage:sd1", "volume:gv2"]
    assert result(dispatcher, "getAllTasks", {"tags": tags}) == details_of(FINISHED, REMOVE_BRICK)


def test_get_all_tasks_with_match_all_returns_tasks_with_every_tag(dispatcher: Dispatcher) -> None:
    params = {"tags": ["spm", "storage:sd1"], "options": {"match": "all"}}
    assert result(dispatcher, "getAllTasks", params) == details_of(FINISHED)


def test_get_all_tasks_with_match_any_returns_tasks_with_either(dispatcher: Dispatcher) -> None:
    params = {"tags": ["storage:sd1", "volume:gv1"], "options": {"match": "any"}}
    assert result(dispatcher, "getAllTasks", params) == details_of(FINISHED, REBALANCE)


def test_get_all_tasks_with_unknown_tags_returns_nothing(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "getAllTasks", {"tags": ["nope", "neither"]}) == {}


def test_get_all_tasks_with_a_tag_given_twice_returns_each_task_once(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "getAllTasks", {"tags": ["gluster", "gluster"]}) == details_of(
        REBALANCE, REMOVE_BRICK
    )


def test_get_all_tasks_takes_positional_params(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "getAllTasks", [["gluster", "volume:gv1"], {"match": "all"}]) == details_of(
        REBALANCE
    )
    assert result(dispatcher, "getAllTasks", ["spm"]) == details_of(RUNNING, FINISHED, ABORTING)
    assert result(dispatcher, "getAllTasks", []) == details_of(*RECORDS)


def test_get_all_tasks_accepts_256_tags(dispatcher: Dispatcher) -> None:
    tags = [f"t{i}" for i in range(255)] + ["volume:gv2"]
    assert result(dispatcher, "getAllTasks", {"tags": tags}) == details_of(REMOVE_BRICK)


# -- legacy listings ---------------------------------------------------------------------


@pytest.mark.parametrize("method", both_names("Host.getAllTasksInfo"))
def test_get_all_tasks_info_returns_id_and_verb_of_tasks_tagged_exactly_spm(
    dispatcher: Dispatcher, method: str
) -> None:
    assert result(dispatcher, method) == {
        RUNNING: {"id": RUNNING, "verb": "createVolume"},
        FINISHED: {"id": FINISHED, "verb": "copyImage"},
        ABORTING: {"id": ABORTING, "verb": "copyImage"},
    }


@pytest.mark.parametrize("method", both_names("Host.getAllTasksStatuses"))
def test_get_all_tasks_statuses_returns_the_status_of_tasks_tagged_exactly_spm(
    dispatcher: Dispatcher, method: str
) -> None:
    assert result(dispatcher, method) == {
        RUNNING: {
            "taskID": RUNNING,
            "taskState": "running",
            "taskResult": "",
            "code": 0,
            "message": "running job 1 of 1",
        },
        FINISHED: {
            "taskID": FINISHED,
            "taskState": "finished",
            "taskResult": "success",
            "code": 0,
            "message": "running job 1 of 1",
        },
        ABORTING: {
            "taskID": ABORTING,
            "taskState": "aborting",
            "taskResult": "",
            "code": 0,
            "message": "aborting",
        },
    }


@pytest.mark.parametrize("method", ["getAllTasksInfo", "getAllTasksStatuses"])
@pytest.mark.parametrize(
    "params",
    [
        {"spUUID": "5849b030-626e-47cb-ad90-3ce782d831b3"},
        {"spUUID": None, "options": {"anything": 1}},
        ["5849b030-626e-47cb-ad90-3ce782d831b3", None],
        ["5849b030-626e-47cb-ad90-3ce782d831b3"],
    ],
)
def test_legacy_listings_accept_and_ignore_sp_uuid_and_options(
    dispatcher: Dispatcher, method: str, params: Any
) -> None:
    assert result(dispatcher, method, params) == result(dispatcher, method)


def test_legacy_listings_reject_an_unknown_param(dispatcher: Dispatcher) -> None:
    assert call(dispatcher, "getAllTasksStatuses", {"tags": "gluster"}) == error_reply(
        -32602, "Invalid params: tags: Extra inputs are not permitted"
    )


# -- one task ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", both_names("Task.getStatus"))
def test_get_task_status_returns_vdsms_status(dispatcher: Dispatcher, method: str) -> None:
    assert result(dispatcher, method, {"taskID": REMOVE_BRICK}) == {
        "taskID": REMOVE_BRICK,
        "taskState": "finished",
        "taskResult": "cleanFailure",
        "code": 4112,
        "message": "brick is offline",
    }


@pytest.mark.parametrize("task", list(RECORDS))
def test_get_task_status_of_every_task_is_its_legacy_status(dispatcher: Dispatcher, task: str) -> None:
    assert result(dispatcher, "Task.getStatus", {"taskID": task}) == status_of(task)


@pytest.mark.parametrize("method", both_names("Task.getInfo"))
def test_get_task_info_returns_id_and_verb(dispatcher: Dispatcher, method: str) -> None:
    assert result(dispatcher, method, {"taskID": REBALANCE}) == {"id": REBALANCE, "verb": "rebalance"}


def test_get_task_details_returns_the_record_get_all_tasks_lists(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "Task.getDetails", {"taskID": REBALANCE}) == details_of(REBALANCE)[REBALANCE]


def test_a_task_id_in_upper_case_finds_the_task(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "Task.getInfo", {"taskID": UNTAGGED.upper()}) == {
        "id": UNTAGGED,
        "verb": "prepareImage",
    }


def test_task_methods_take_positional_params(dispatcher: Dispatcher) -> None:
    assert result(dispatcher, "getTaskInfo", [RUNNING]) == {"id": RUNNING, "verb": "createVolume"}


@pytest.mark.parametrize(
    "method",
    [m for name in TASK_METHODS for m in both_names(name)],
)
def test_a_task_method_with_an_unknown_task_id_answers_401(dispatcher: Dispatcher, method: str) -> None:
    assert call(dispatcher, method, {"taskID": UNKNOWN}) == error_reply(
        401, f"Task id unknown: ('{UNKNOWN}',)"
    )


@pytest.mark.parametrize(
    "method",
    [m for name in TASK_METHODS for m in both_names(name)],
)
def test_a_task_method_with_a_task_id_that_is_not_a_uuid_answers_1000(
    dispatcher: Dispatcher, method: str
) -> None:
    assert call(dispatcher, method, {"taskID": "x"}) == error_reply(
        1000, "Invalid parameter: ('taskID', 'x')"
    )


def test_a_task_id_in_braces_answers_1000(dispatcher: Dispatcher) -> None:
    braced = "{" + RUNNING + "}"
    assert call(dispatcher, "Task.getStatus", {"taskID": braced}) == error_reply(
        1000, f"Invalid parameter: ('taskID', '{braced}')"
    )


def test_a_task_method_without_task_id_answers_32602(dispatcher: Dispatcher) -> None:
    assert call(dispatcher, "Task.getStatus", {}) == error_reply(
        -32602, "Invalid params: taskID: Field required"
    )


def test_a_task_id_that_is_not_a_string_answers_32602(dispatcher: Dispatcher) -> None:
    assert call(dispatcher, "Task.getStatus", {"taskID": 5}) == error_reply(
        -32602, "Invalid params: taskID: Input should be a valid string"
    )


# -- control: stop, clear, revert --------------------------------------------------------


@pytest.mark.parametrize("method", both_names("Task.stop"))
def test_stop_of_a_running_task_is_forwarded_to_its_subsystem(dispatcher: Dispatcher, method: str) -> None:
    assert dispatcher.handle(request(method, {"taskID": REBALANCE}, "s-1")) == Reply(
        "s-1",
        body=None,
        forward=Forward("stop", REBALANCE, "gluster"),
        method=method,
        params=TaskParams(taskID=REBALANCE),
    )


@pytest.mark.parametrize("task", [FINISHED, REMOVE_BRICK, UNTAGGED])
def test_stop_of_a_done_task_answers_true_without_forwarding(dispatcher: Dispatcher, task: str) -> None:
    reply = dispatcher.handle(request("Task.stop", {"taskID": task}))
    assert reply.forward is None
    assert reply.body is not None
    assert orjson.loads(reply.body) == {"jsonrpc": "2.0", "id": 7, "result": True}


def test_stop_of_an_aborting_task_answers_411(dispatcher: Dispatcher) -> None:
    assert call(dispatcher, "stopTask", {"taskID": ABORTING}) == error_reply(
        411, f"Task is aborted: ('{ABORTING}', 'aborting')"
    )


@pytest.mark.parametrize("method", both_names("Task.revert"))
def test_revert_of_a_done_task_is_forwarded_to_its_subsystem(dispatcher: Dispatcher, method: str) -> None:
    assert dispatcher.handle(request(method, [REMOVE_BRICK], 12)) == Reply(
        12,
        body=None,
        forward=Forward("revert", REMOVE_BRICK, "gluster"),
        method=method,
        params=TaskParams(taskID=REMOVE_BRICK),
    )


def test_revert_of_a_running_task_answers_403(dispatcher: Dispatcher) -> None:
    assert call(dispatcher, "revertTask", {"taskID": RUNNING}) == error_reply(
        403, f"Task not finished: ('{RUNNING}', 'running')"
    )


@pytest.mark.parametrize("method", both_names("Task.clear"))
def test_clear_of_a_done_task_removes_it_and_tells_the_owner(
    dispatcher: Dispatcher, cleared: list[tuple[str, Tombstone]], method: str
) -> None:
    assert call(dispatcher, method, {"taskID": REMOVE_BRICK}) == {"jsonrpc": "2.0", "id": 7, "result": True}
    assert cleared == [(REMOVE_BRICK, Tombstone(subsystem="gluster", seq=10, cleared_at=500.0))]
    assert call(dispatcher, "Task.getStatus", {"taskID": REMOVE_BRICK}) == error_reply(
        401, f"Task id unknown: ('{REMOVE_BRICK}',)"
    )
    assert REMOVE_BRICK not in result(dispatcher, "getAllTasks")
    assert REMOVE_BRICK not in result(dispatcher, "getAllTasks", {"tags": "gluster"})


def test_clear_of_a_running_task_answers_410_and_the_task_stays(
    dispatcher: Dispatcher, cleared: list[tuple[str, Tombstone]]
) -> None:
    assert call(dispatcher, "clearTask", {"taskID": RUNNING}) == error_reply(
        410, f"Operation is not allowed in this task state: ('{RUNNING}', 'running')"
    )
    assert cleared == []
    assert result(dispatcher, "getTaskStatus", {"taskID": RUNNING}) == status_of(RUNNING)


def test_clear_without_a_callback_still_clears(view: TaskView) -> None:
    dispatcher = Dispatcher(view)
    assert result(dispatcher, "Task.clear", {"taskID": FINISHED}) is True
    assert FINISHED not in view


def test_a_method_that_crashes_answers_32603_with_the_exception_type(view: TaskView) -> None:
    def crash(entry: Entry) -> None:
        raise RuntimeError("disk on fire")

    dispatcher = Dispatcher(view, on_clear=crash)
    assert call(dispatcher, "Task.clear", {"taskID": FINISHED}) == error_reply(
        -32603, "Internal error: RuntimeError"
    )


# -- protocol errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"jsonrpc": "2.0", "id": 1', "Parse error: unexpected end of data: "),
        (
            b'{"jsonrpc": "2.0", "method": "\xff"}',
            "Parse error: str is not valid UTF-8: surrogates not allowed",
        ),
        (b"", "Parse error: Input is a zero-length, empty document"),
    ],
    ids=["bad-json", "bad-utf8", "empty"],
)
def test_a_body_that_is_not_json_answers_32700(dispatcher: Dispatcher, body: bytes, message: str) -> None:
    reply = orjson.loads(dispatcher.handle(body).body or b"")
    assert reply["error"]["message"].startswith(message)
    assert {**reply, "error": {**reply["error"], "message": ""}} == error_reply(-32700, "", None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'"Host.getAllTasks"', "Invalid request: a request is a JSON object"),
        (b"42", "Invalid request: a request is a JSON object"),
        (b"null", "Invalid request: a request is a JSON object"),
        (  # a batch is served member by member (Aggregator): never as one request
            b'[{"jsonrpc": "2.0", "id": 1, "method": "getAllTasks"}]',
            "Invalid request: a batch is not a single request",
        ),
        (b'{"id": 1, "method": "getAllTasks"}', 'Invalid request: "jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "getAllTasks"}', 'Invalid request: "jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": 2.0, "id": 1, "method": "getAllTasks"}', 'Invalid request: "jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": "2.0", "id": 1}', 'Invalid request: "method" must be a string'),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', 'Invalid request: "method" must be a string'),
        (
            b'{"jsonrpc": "2.0", "id": true, "method": "getAllTasks"}',
            'Invalid request: "id" must be a string, a number or null',
        ),
        (
            b'{"jsonrpc": "2.0", "id": {}, "method": "getAllTasks"}',
            'Invalid request: "id" must be a string, a number or null',
        ),
        (
            b'{"jsonrpc": "2.0", "id": [1], "method": "getAllTasks"}',
            'Invalid request: "id" must be a string, a number or null',
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getAllTasks", "params": "spm"}',
            'Invalid request: "params" must be an object or an array',
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getAllTasks", "params": 5}',
            'Invalid request: "params" must be an object or an array',
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getAllTasks", "tags": ["spm"]}',
            "Invalid request: unknown members ['tags']",
        ),
    ],
)
def test_a_body_that_is_not_a_json_rpc_request_answers_32600(
    dispatcher: Dispatcher, body: bytes, message: str
) -> None:
    # The reply carries the request's id when it is a well-formed one, else null.
    raw = orjson.loads(body)
    request_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | float):
        request_id = None
    reply = dispatcher.handle(body)
    assert reply.forward is None
    assert orjson.loads(reply.body or b"") == error_reply(-32600, message, request_id)


@pytest.mark.parametrize("method", ["Host.getAllTask", "getalltasks", "Task.delete", "", "Host.getAllTasks "])
def test_an_unknown_method_answers_32601(dispatcher: Dispatcher, method: str) -> None:
    assert call(dispatcher, method) == error_reply(-32601, f"Method not found: {method!r}")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tagz": "spm"}, "Invalid params: tagz: Extra inputs are not permitted"),
        (
            {"tags": 5},
            "Invalid params: tags.str: Input should be a valid string; tags.list[str]: Input should be a valid list",
        ),
        (
            {"tags": [5]},
            "Invalid params: tags.str: Input should be a valid string; tags.list[str].0: Input should be a valid string",
        ),
        ({"options": {"match": "some"}}, "Invalid params: options.match: Input should be 'any' or 'all'"),
        (
            {"options": "all"},
            "Invalid params: options: Input should be a valid dictionary or instance of GetAllTasksOptions",
        ),
        (["spm", None, "extra"], "Invalid params: at most 2 positional params (tags, options)"),
        ({"tags": [f"t{i}" for i in range(257)]}, "Invalid params: tags: at most 256 tags, got 257"),
    ],
)
def test_get_all_tasks_with_invalid_params_answers_32602(
    dispatcher: Dispatcher, params: Any, message: str
) -> None:
    assert call(dispatcher, "Host.getAllTasks", params) == error_reply(-32602, message)


def test_get_all_tasks_with_the_revision_option_answers_the_tasks_and_the_revision_they_are_from(
    dispatcher: Dispatcher, view: TaskView
) -> None:
    view.revision = 41

    answered = result(dispatcher, "Host.getAllTasks", {"tags": "spm", "options": {"revision": True}})

    assert answered == {"revision": 41, "tasks": result(dispatcher, "Host.getAllTasks", {"tags": "spm"})}
    assert set(answered["tasks"]) == {RUNNING, FINISHED, ABORTING}
    assert result(dispatcher, "Host.getAllTasks", {"options": {"revision": False}}) == result(
        dispatcher, "Host.getAllTasks"
    )


def test_get_all_tasks_ignores_unknown_options_and_still_checks_known_ones(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    # options is for extension: a newer client's options must not break an older server.
    with caplog.at_level(logging.DEBUG, logger="bus_tasks.protocol.params"):
        listed = result(dispatcher, "Host.getAllTasks", {"tags": "spm", "options": {"sortBy": 5, "x": {}}})
    assert listed == result(dispatcher, "Host.getAllTasks", {"tags": "spm"})
    assert "unknown options ignored: ['sortBy', 'x']" in caplog.text
    assert call(dispatcher, "Host.getAllTasks", {"options": {"match": "some", "sortBy": 5}}) == error_reply(
        -32602, "Invalid params: options.match: Input should be 'any' or 'all'"
    )


def test_a_task_method_with_too_many_positional_params_answers_32602(dispatcher: Dispatcher) -> None:
    assert call(dispatcher, "Task.stop", [RUNNING, True]) == error_reply(
        -32602, "Invalid params: at most 1 positional params (taskID)"
    )


@pytest.mark.parametrize("tag", ["a=b", "", "x" * 65, "with space"])
def test_get_all_tasks_with_a_malformed_tag_answers_1000(dispatcher: Dispatcher, tag: str) -> None:
    assert call(dispatcher, "getAllTasks", {"tags": ["spm", tag]}) == error_reply(
        1000, f"Invalid parameter: ('tags', {tag!r})"
    )


def test_get_all_tasks_with_a_tag_ending_in_a_newline_answers_1000(dispatcher: Dispatcher) -> None:
    # "spm\n" is not a valid tag (no record can carry it); it must not pass as a query tag.
    assert call(dispatcher, "getAllTasks", {"tags": "spm\n"}) == error_reply(
        1000, "Invalid parameter: ('tags', 'spm\\n')"
    )


def test_get_all_tasks_with_a_malformed_tag_as_a_string_answers_1000(dispatcher: Dispatcher) -> None:
    assert call(dispatcher, "getAllTasks", {"tags": "a=b"}) == error_reply(
        1000, "Invalid parameter: ('tags', 'a=b')"
    )


# -- reply envelope ----------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc", 0, 42, -1, 1.5, None], ids=repr)
def test_a_reply_carries_the_request_id(dispatcher: Dispatcher, request_id: Any) -> None:
    ok = dispatcher.handle(request("getAllTasks", {"tags": "nope"}, request_id))
    failed = dispatcher.handle(request("Task.getStatus", {"taskID": UNKNOWN}, request_id))
    assert ok.request_id == failed.request_id == request_id
    assert orjson.loads(ok.body or b"") == {"jsonrpc": "2.0", "id": request_id, "result": {}}
    assert orjson.loads(failed.body or b"")["id"] == request_id


def test_a_request_without_id_is_answered_with_a_null_id(dispatcher: Dispatcher) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "method": "getTaskInfo", "params": [RUNNING]})
    assert orjson.loads(dispatcher.handle(body).body or b"") == {
        "jsonrpc": "2.0",
        "id": None,
        "result": {"id": RUNNING, "verb": "createVolume"},
    }


def test_a_reply_names_the_method_it_answers(dispatcher: Dispatcher) -> None:
    assert dispatcher.handle(request("getTaskInfo", [RUNNING])).method == "getTaskInfo"
    assert dispatcher.handle(request("nope")).method == "nope"
    assert dispatcher.handle(b"{").method == ""


ERROR_BODIES = [
    b"{",
    b'"\xff"',
    b"[]",
    b'{"jsonrpc": "2.0", "id": true, "method": "x"}',
    request("nope"),
    request("getAllTasks", {"tags": 5}),
    request("getAllTasks", {"tags": "a=b"}),
    request("Task.getStatus", {"taskID": "x"}),
    request("Task.getStatus", {"taskID": task_id(99)}),
    request("Task.clear", {"taskID": task_id(1)}),
    request("Task.stop", {"taskID": task_id(3)}),
    request("Task.revert", {"taskID": task_id(1)}),
]


@pytest.mark.parametrize("body", ERROR_BODIES)
def test_every_error_reply_has_an_integer_code_and_a_string_message(
    dispatcher: Dispatcher, body: bytes
) -> None:
    reply = orjson.loads(dispatcher.handle(body).body or b"")
    assert set(reply) == {"jsonrpc", "id", "error"}
    assert set(reply["error"]) == {"code", "message"}
    assert type(reply["error"]["code"]) is int
    assert isinstance(reply["error"]["message"], str)
    assert reply["error"]["message"] != ""


def test_every_vdsm_method_has_its_flat_alias_and_bus_tasks_own_have_none(dispatcher: Dispatcher) -> None:
    assert ALIASES == {
        "Host.getAllTasks": "getAllTasks",
        "Host.getAllTasksInfo": "getAllTasksInfo",
        "Host.getAllTasksStatuses": "getAllTasksStatuses",
        "Task.getStatus": "getTaskStatus",
        "Task.getInfo": "getTaskInfo",
        "Task.stop": "stopTask",
        "Task.clear": "clearTask",
        "Task.revert": "revertTask",
    }
    assert set(dispatcher.methods) == set(ALIASES) | set(ALIASES.values()) | BUS_TASKS_METHODS


def test_a_repeated_get_all_tasks_never_answers_from_before_a_change(
    dispatcher: Dispatcher, view: TaskView
) -> None:
    before = result(dispatcher, "Host.getAllTasks", {"tags": "spm"})
    assert result(dispatcher, "Host.getAllTasks", {"tags": "spm"}) == before
    added = make_record(98, tags=("spm",))
    view.apply(Event(event="created", seq=11, task=added))

    after = result(dispatcher, "Host.getAllTasks", {"tags": "spm"})

    assert set(after) == {*before, added.id}
    task = next(iter(before))
    view.apply(Event(event="cleared", seq=12, task=RECORDS[task]))
    assert set(result(dispatcher, "Host.getAllTasks", {"tags": "spm"})) == {*before, added.id} - {task}
