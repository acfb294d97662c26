"""Where fuzzing starts: real samples of each target's input, and the tokens its grammar is made of.

The seeds are what the parsers really get (VDSM's frames and calls, events as publishers send
them, the gluster CLI's own XML, the shipped config file); ``make fuzz`` adds them to the kept
corpus before each run, and the tokens go to libFuzzer as its dictionary.
"""

from __future__ import annotations

from pathlib import Path

from bus_tasks import codec
from bus_tasks.aggregator.methods import Dispatcher
from bus_tasks.config import Settings
from bus_tasks.core.model import State
from bus_tasks.core.view import TaskView
from fuzz.targets import TASK_ABORTING, TASK_FINISHED, TASK_RUNNING

REPO = Path(__file__).resolve().parents[2]
GLUSTER_FIXTURES = REPO / "tests" / "fixtures" / "gluster"
CONFIG_EXAMPLE = REPO / "config" / "bus_tasks.toml"

_BODY = codec.dumps([{"jsonrpc": "2.0", "method": "Host.getAllTasksStatuses", "params": {}, "id": "1"}])
_STOMP = [
    b"CONNECT\naccept-version:1.2\nheart-beat:0,24000\n\n\x00",
    b"SUBSCRIBE\ndestination:d1\nack:auto\nid:s1\n\n\x00",
    b"SEND\ndestination:jms.topic.vdsm_requests\ncontent-type:application/json\nreply-to:d1\n"
    + f"content-length:{len(_BODY)}\n\n".encode()
    + _BODY
    + b"\x00\n",
    b"SEND\r\ndestination:jms.topic.vdsm_irs_requests\r\nreply-to:d1\r\n\r\n{}\x00\r\n",
    b"MESSAGE\na\\cb:line1\\nline2\\r\\\\end\\c\ncontent-length:5\n\na\x00b\x00c\x00",
    b"STOMP\nlogin:a\\cb\nhost:x\n\n\x00DISCONNECT\nreceipt:77\n\n\x00",
    b"\n\n\r\nUNSUBSCRIBE\nid:s1\n\n\x00",
]


def _request(method: str, params: object, request_id: object = 1) -> bytes:
    return codec.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


_RPC = [
    _request("Host.getAllTasks", {"tags": ["spm", "gluster"], "options": {"match": "all", "revision": True}}),
    _request("getAllTasks", {"tags": "spm", "options": None}, "a"),
    _request("Host.getAllTasksInfo", {"spUUID": TASK_RUNNING, "options": {}}),
    _request("Host.getAllTasksStatuses", [None, None], 2.5),
    _request("Task.getStatus", {"taskID": TASK_RUNNING}),
    _request("Task.getDetails", [TASK_FINISHED]),
    _request("Task.stop", {"taskID": TASK_ABORTING}),
    _request("Task.clear", {"taskID": TASK_FINISHED, "force": False}),
    _request("Task.revert", {"taskID": TASK_RUNNING.upper()}),
    _request("Task.retag", {"taskID": TASK_RUNNING, "tags": ["spm", "x:y"]}),
    _request("Host.getTaskChanges", {"since": 1, "tags": ["spm"], "options": {"match": "any"}}),
    _request("Host.getSubsystems", {}),
    codec.dumps({"jsonrpc": "2.0", "method": "Task.getInfo", "params": {"taskID": TASK_FINISHED}}),
    b'[{"jsonrpc":"2.0","method":"Task.getInfo","params":{"taskID":"'
    + TASK_RUNNING.encode()
    + b'"},"id":"9"},'
    b'{"jsonrpc":"2.0","method":"Task.stop","params":{"taskID":"' + TASK_RUNNING.encode() + b'"}}]',
    _BODY,
]

_REPLIES = [
    b'{"jsonrpc":"2.0","id":"1","result":{"' + TASK_RUNNING.encode() + b'":{"taskID":"x"}}}',
    b'{"jsonrpc":"2.0","id":"1","error":{"code":401,"message":"Task id unknown: (\'x\',)"}}',
    b'[{"jsonrpc":"2.0","id":"2","result":true},{"jsonrpc":"2.0","id":"1","error":{"code":-32602,"message":"m"}}]',
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}',
]


def _record(task_id: str, state: str, **extra: object) -> dict[str, object]:
    return {
        "id": task_id,
        "subsystem": "vdsm",
        "verb": "copyImage",
        "tags": ["spm"],
        "state": state,
        "code": 0,
        "message": "running job 1 of 1",
        "result": "",
        "progress": 50,
        "data": {"volume": "gv1", "bricks": ["h1:/b"], "runtime": 1.5},
        "created_at": "2024-05-01T12:00:00Z",
        "updated_at": "2024-05-01T12:05:30.250+02:00",
        **extra,
    }


_EVENTS = [
    codec.dumps({"schema": 1, "event": "updated", "seq": 7, "task": _record(TASK_RUNNING, "running")}),
    codec.dumps(
        {
            "schema": 1,
            "event": "created",
            "seq": 1,
            "task": _record("6b1e0f3e-5d1c-4a8e-9d55-0a5c3b1e2f70", "init"),
        }
    ),
    codec.dumps({"schema": 1, "event": "cleared", "seq": 9, "task": _record(TASK_FINISHED, "finished")}),
    codec.dumps({"schema": 1, "event": "announced", "seq": 3, "subsystem": "vdsm", "tasks": [TASK_RUNNING]}),
    codec.dumps(
        {
            "schema": 1,
            "event": "heartbeat",
            "subsystem": "vdsm",
            "instance": "i1",
            "interval_s": 5.0,
            "tasks": 2,
            "host": "h",
            "pid": 10,
            "sent_at": "2024-05-01T12:00:00Z",
        }
    ),
    codec.dumps(
        {
            "schema": 1,
            "event": "aggregator",
            "name": "a1",
            "instance": "i1",
            "revision": 4,
            "tasks": 2,
            "started_at": "2024-05-01T12:00:00Z",
            "interval_s": 5.0,
            "sent_at": "2024-05-01T12:00:01Z",
        }
    ),
]

_QUERIES = [
    b"tag=spm&tag=gluster&match=all&since=5\n12",
    b"tag=volume%3Agv1&match=any",
    b"since=0\n",
    b"tag=a+b&tag=%ZZ&match=none\nabc",
    b"tag=spm&limit=100&continue=eyJsYXN0IjoiYSJ9",
    b"limit=-1&limit=2&continue=",
]


def _config() -> list[bytes]:
    example = CONFIG_EXAMPLE.read_bytes()
    return [
        example,
        example + b"\0BROKER_URL=redis://:secret@127.0.0.1:6379/0\nSTORE=redis\nSTORE_REDIS_URL=redis://h/1",
        b'broker_url = "memory://"\nstore = "none"\nlog_level = "debug"\n\0PREFETCH_COUNT=0\nHTTP_LISTEN=[::1]:80',
    ]


def seeds(target: str) -> list[bytes]:
    """Real inputs of ``target``, to start its corpus from."""
    if target == "stomp_frames":
        return [*_STOMP, b"".join(_STOMP)]
    if target == "rpc_request":
        return _RPC
    if target == "rpc_reply":
        return _REPLIES
    if target == "events":
        return _EVENTS
    if target == "gluster_xml":
        return [path.read_bytes() for path in sorted(GLUSTER_FIXTURES.glob("*.xml"))]
    if target == "config":
        return _config()
    if target == "http_query":
        return _QUERIES
    raise KeyError(target)


def dictionary(target: str) -> list[bytes]:
    """The tokens ``target``'s input is made of (libFuzzer's ``-dict``)."""
    if target == "stomp_frames":
        words = ["CONNECT", "STOMP", "SEND", "SUBSCRIBE", "MESSAGE", "ERROR", "DISCONNECT", "content-length:",
                 "accept-version:1.2", "heart-beat:", "destination:", "reply-to:", "receipt:", "\\c", "\\n",
                 "\\r", "\\\\", "\r\n", "\n\n", "\x00"]  # fmt: skip
    elif target in ("rpc_request", "rpc_reply"):
        words = [f'"{name}"' for name in Dispatcher(TaskView()).methods]
        words += ['"jsonrpc":"2.0"', '"id":', '"method":', '"params":', '"result":', '"error":', '"code":',
                  '"message":', '"taskID":', '"tags":', '"options":', '"match":"all"', '"revision":true',
                  '"force":true', '"since":', '"spUUID":', f'"{TASK_RUNNING}"', "null", "[]", "{}"]  # fmt: skip
    elif target == "events":
        words = ['"schema":1', '"event":', '"seq":', '"task":', '"subsystem":', '"verb":', '"tags":', '"state":',
                 '"progress":', '"data":', '"result":', '"created_at":', '"updated_at":', '"sent_at":',
                 '"interval_s":', '"instance":', '"tasks":', '"revision":', '"started_at":', '"heartbeat"',
                 '"announced"', '"aggregator"', '"cleared"', "1e400", "-0.0", '"2024-05-01T12:00:00Z"']  # fmt: skip
        words += [f'"{state.value}"' for state in State]
    elif target == "gluster_xml":
        words = [f"<{tag}>" for tag in ("cliOutput", "opRet", "opErrno", "opErrstr", "volStatus", "volumes",
                 "volume", "volName", "tasks", "task", "type", "id", "status", "statusStr", "params", "brick",
                 "volRebalance", "volRemoveBrick", "task-id", "node", "nodeName", "aggregate", "files", "size",
                 "lookups", "failures", "skipped", "runtime")]  # fmt: skip
        words += ["<!DOCTYPE", "<!ENTITY", "&amp;", "<![CDATA[", "]]>", "/>", "<?xml"]
    elif target == "config":
        words = list(Settings.model_fields) + [name.upper() + "=" for name in Settings.model_fields]
        words += [
            "\x00",
            " = ",
            '"""',
            "'''",
            "[",
            "]",
            "{",
            "}",
            "true",
            "inf",
            "nan",
            "1979-05-27T07:32:00Z",
        ]
    elif target == "http_query":
        words = [
            "tag=",
            "match=",
            "since=",
            "limit=",
            "continue=",
            "match=all",
            "match=any",
            "&",
            "%3A",
            "%00",
            "+",
            "\n",
        ]
    else:
        raise KeyError(target)
    return [word.encode() for word in words]
