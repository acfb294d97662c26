"""The STOMP front door over the real RabbitMQ and a real aggregator, with VDSM's frames and stomp.py."""

from __future__ import annotations

import queue
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stomp
import trustme
from support.brokers import RABBITMQ, Broker, System
from support.faultproxy import FaultProxy
from support.vdsm_schema import assert_conforms
from support.vdsm_stomp import RawVdsmClient

from bus_tasks import codec, transport
from bus_tasks.core.model import State
from bus_tasks.frontdoors.stomp.running import RunningFrontDoor
from bus_tasks.frontdoors.stomp.server import StompLimits
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until
from bus_tasks.transport import BusOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

UNKNOWN_ID = "00000000-0000-4000-8000-000000000001"


@pytest.fixture
def door(rabbitmq_system: System) -> Iterator[RunningFrontDoor]:
    with RunningFrontDoor(
        rabbitmq_system.broker.connection(confirm_publish=False),
        timeout_s=10.0,
        limits=StompLimits(max_body_bytes=64 * 1024),
    ) as running:
        yield running


@pytest.fixture
def vdsm(rabbitmq_system: System) -> TaskPublisher:
    """A listening ``vdsm`` subsystem that answers stop and revert."""
    pub = rabbitmq_system.publisher("vdsm", listen=True)
    pub.on_stop(lambda task_id: None)
    pub.on_revert(lambda task_id: None)
    return pub


def connected(door: RunningFrontDoor, **kwargs: Any) -> RawVdsmClient:
    client = RawVdsmClient(door.port, **kwargs)
    frame = client.connect()
    assert frame.command == "CONNECTED"
    assert frame.headers["version"] == "1.2"
    return client


def wait_listed(system: System, task_id: str, state: str) -> None:
    client = system.client()
    wait_until(
        lambda: client.get_all_tasks().get(task_id, {}).get("taskState") == state,
        timeout_s=10,
        what=f"{task_id} {state}",
    )


def test_vdsm_frames_byte_for_byte_connect_and_get_heart_beats_as_negotiated(door: RunningFrontDoor) -> None:
    client = connected(door)
    assert client.connected is not None
    assert client.connected.headers["heart-beat"] == "24000,0"
    assert client.call("Host.getAllTasksStatuses")["result"] == {}
    client.close()


def test_each_read_verb_answers_in_vdsm_schema_through_the_front_door(
    door: RunningFrontDoor, rabbitmq_system: System, vdsm: TaskPublisher
) -> None:
    running = vdsm.create("copyImage", ["spm"], state=State.RUNNING).id
    done = vdsm.create("createVolume", ["spm"]).id
    vdsm.finish(done)
    wait_listed(rabbitmq_system, done, "finished")
    wait_listed(rabbitmq_system, running, "running")
    client = connected(door)

    statuses = client.call("Host.getAllTasksStatuses")["result"]
    assert set(statuses) == {running, done}
    for status in statuses.values():
        assert_conforms("TaskStatus", status)
    infos = client.call("Host.getAllTasksInfo")["result"]
    assert infos[done] == {"id": done, "verb": "createVolume"}
    for info in infos.values():
        assert_conforms("TaskInfo", info)
    details = client.call("Host.getAllTasks", {"tags": ["spm"]})["result"]
    for task in details.values():
        assert_conforms("TaskDetails", task)
    status = client.call("Task.getStatus", {"taskID": done})["result"]
    assert_conforms("TaskStatus", status)
    assert (status["taskState"], status["taskResult"]) == ("finished", "success")
    assert_conforms("TaskInfo", client.call("Task.getInfo", {"taskID": running})["result"])
    client.close()


def test_stop_revert_and_clear_answer_true_through_the_front_door(
    door: RunningFrontDoor, rabbitmq_system: System, vdsm: TaskPublisher
) -> None:
    running = vdsm.create("copyImage", ["spm"], state=State.RUNNING).id
    done = vdsm.create("createVolume", ["spm"]).id
    vdsm.finish(done)
    wait_listed(rabbitmq_system, done, "finished")
    wait_listed(rabbitmq_system, running, "running")
    client = connected(door)

    assert client.call("Task.stop", {"taskID": running})["result"] is True
    assert client.call("Task.revert", {"taskID": done})["result"] is True
    assert client.call("Task.clear", {"taskID": done})["result"] is True
    assert done not in client.call("Host.getAllTasks")["result"]
    client.close()


def test_unknown_task_answers_401_and_a_bad_task_id_1000_in_vdsm_form(door: RunningFrontDoor) -> None:
    client = connected(door)
    unknown = client.call("Task.getStatus", {"taskID": UNKNOWN_ID})
    assert unknown["error"] == {"code": 401, "message": f"Task id unknown: ('{UNKNOWN_ID}',)"}
    bad = client.call("Task.getStatus", {"taskID": "not-a-uuid"})
    assert bad["error"]["code"] == 1000
    assert bad["error"]["message"].startswith("Invalid parameter")
    client.close()


def test_server_sends_eol_heart_beats_within_the_negotiated_interval(door: RunningFrontDoor) -> None:
    client = connected(door, heartbeat="0,1000")
    assert client.connected is not None
    assert client.connected.headers["heart-beat"] == "1000,0"
    for _ in range(3):
        assert client.read_raw(timeout_s=1.8) == b"\n"
    client.close()


def test_twenty_concurrent_connections_each_get_their_own_replies(door: RunningFrontDoor) -> None:
    errors: list[BaseException] = []

    def one() -> None:
        try:
            client = connected(door)
            for _ in range(5):
                assert client.call("Task.getStatus", {"taskID": UNKNOWN_ID})["error"]["code"] == 401
            client.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not [t for t in threads if t.is_alive()]
    assert errors == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"HELLO\n\n\x00", id="unknown-command"),
        pytest.param(b"SEND\nno colon here\n\n\x00", id="bad-header-line"),
        pytest.param(b"SEND\ndestination:jms.topic.vdsm_requests\n\n{}\x00", id="send-without-reply-to"),
        pytest.param(b"SEND\nreply-to:x\n\n{}\x00", id="send-without-destination"),
        pytest.param(b"SEND\ndestination:elsewhere\nreply-to:x\n\n{}\x00", id="send-elsewhere"),
        pytest.param(b"SEND\ncontent-length:999999\n\n", id="body-over-the-limit"),
        pytest.param(b"SEND\ncontent-length:2\n\nabc\x00", id="no-nul-after-content-length"),
    ],
)
def test_bad_input_gets_an_error_frame_and_a_closed_connection_while_another_keeps_working(
    door: RunningFrontDoor, data: bytes
) -> None:
    other = connected(door)
    bad = connected(door)
    bad.send_raw(data)
    error = bad.read_frame()
    assert error.command == "ERROR"
    assert "\n" not in error.headers["message"]
    assert error.headers["message"]
    assert bad.closed_by_server(timeout_s=5.0)
    bad.close()
    assert other.call("Host.getAllTasksStatuses")["result"] == {}
    other.close()


def test_a_client_that_vanishes_mid_call_leaks_no_pending_reply(door: RunningFrontDoor) -> None:
    client = connected(door)
    client.send_request(
        codec.dumps([{"jsonrpc": "2.0", "method": "Host.getAllTasks", "params": {}, "id": "1"}])
    )
    client.close()
    wait_until(
        lambda: door.door.pending == 0 and door.door.sessions == 0, timeout_s=10, what="nothing pending"
    )
    other = connected(door)
    assert other.call("Host.getAllTasksStatuses")["result"] == {}
    other.close()


def test_disconnect_with_receipt_gets_its_receipt(door: RunningFrontDoor) -> None:
    client = connected(door)
    client.send_raw(b"DISCONNECT\nreceipt:77\n\n\x00")
    receipt = client.read_frame()
    assert (receipt.command, receipt.headers) == ("RECEIPT", {"receipt-id": "77"})
    assert client.closed_by_server(timeout_s=5.0)
    client.close()


def test_a_request_without_reply_gets_a_general_exception_per_id_by_its_deadline(
    rabbitmq_broker: Broker,
) -> None:
    with RunningFrontDoor(rabbitmq_broker.connection(confirm_publish=False), timeout_s=0.5) as running:
        client = connected(running)
        request: list[dict[str, Any]] = [
            {"jsonrpc": "2.0", "method": "Host.getAllTasks", "params": {}, "id": i} for i in ("a", "b")
        ]
        client.send_request(codec.dumps(request))
        reply = codec.loads(client.read_frame(timeout_s=5.0).body)
        assert [(r["id"], r["error"]["code"]) for r in reply] == [("a", 100), ("b", 100)]
        assert "0.5s" in reply[0]["error"]["message"]
        client.close()


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)


def test_stomp_py_client_calls_through_the_front_door(door: RunningFrontDoor) -> None:
    conn = stomp.Connection12([("127.0.0.1", door.port)], heartbeats=(0, 0))
    listener = _Listener()
    conn.set_listener("", listener)
    conn.connect(wait=True)
    reply_to = str(uuid.uuid4())
    conn.subscribe(destination=reply_to, id="sub-1", ack="auto")
    body = codec.dumps(
        [{"jsonrpc": "2.0", "method": "Task.getInfo", "params": {"taskID": UNKNOWN_ID}, "id": "x"}]
    )
    conn.send(
        "jms.topic.vdsm_requests", body, content_type="application/json", headers={"reply-to": reply_to}
    )
    frame = listener.messages.get(timeout=10)
    assert frame.headers["subscription"] == "sub-1"
    assert frame.headers["destination"] == reply_to
    assert frame.headers["content-type"] == "application/json"
    assert codec.loads(frame.body)[0]["error"]["code"] == 401
    conn.disconnect()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[trustme.CA, ssl.SSLContext]:
    """A throwaway CA and the server context of a certificate it signed, requiring client certs."""
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return ca, context


def test_tls_with_a_client_certificate_works_and_without_one_is_refused(
    rabbitmq_system: System, tls: tuple[trustme.CA, ssl.SSLContext]
) -> None:
    ca, server_context = tls
    with RunningFrontDoor(
        rabbitmq_system.broker.connection(confirm_publish=False), timeout_s=10.0, ssl_context=server_context
    ) as running:
        with_cert = ssl.create_default_context()
        ca.configure_trust(with_cert)
        ca.issue_cert("engine.example").configure_cert(with_cert)
        client = connected(running, ssl_context=with_cert)
        assert client.call("Host.getAllTasksStatuses")["result"] == {}
        client.close()

        without = ssl.create_default_context()
        ca.configure_trust(without)
        refused = RawVdsmClient(running.port, ssl_context=without, timeout_s=5.0)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            refused.connect()
        refused.close()


# -- a lost broker connection ---------------------------------------------------------------


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(RABBITMQ) as running:
        yield running


def door_via(proxy: FaultProxy, broker: Broker, timeout_s: float) -> RunningFrontDoor:
    """A front door whose one broker connection goes through ``proxy``."""
    connection = transport.open(
        broker.via(proxy.port), BusOptions(confirm_publish=False, connect_timeout_s=5.0)
    )
    return RunningFrontDoor(connection, timeout_s=timeout_s)


def request(request_id: str) -> bytes:
    return codec.dumps([{"jsonrpc": "2.0", "method": "Host.getAllTasks", "params": {}, "id": request_id}])


def recovered(running: RunningFrontDoor, proxy: FaultProxy) -> bool:
    return proxy.live_connections() >= 1 and not running.bridge.recovering


def test_replies_arrive_again_after_the_broker_connection_is_lost_and_recovered(
    rabbitmq_system: System, proxy: FaultProxy
) -> None:
    with door_via(proxy, rabbitmq_system.broker, timeout_s=3.0) as running:
        client, other = connected(running), connected(running)
        assert client.call("Host.getAllTasksStatuses")["result"] == {}
        for attempt in range(2):  # the recovered connection is watched as the first one was
            client.send_request(request(f"in-flight-{attempt}"))
            assert proxy.drop_all() == 1
            # In flight when the connection went: its result, or a clean 100 by its deadline.
            (answer,) = codec.loads(client.read_frame(timeout_s=10.0).body)
            assert answer["id"] == f"in-flight-{attempt}"
            assert "result" in answer or answer["error"]["code"] == 100, answer
            wait_until(lambda: recovered(running, proxy), timeout_s=30, what="the door reconnected")
            assert client.call("Host.getAllTasksStatuses")["result"] == {}
            assert other.call("Host.getAllTasks")["result"] == {}  # every client shares it
        assert running.door.pending == 0
        client.close()
        other.close()


def test_while_the_broker_is_away_requests_are_held_then_answered_or_timed_out_cleanly(
    rabbitmq_system: System, proxy: FaultProxy
) -> None:
    with door_via(proxy, rabbitmq_system.broker, timeout_s=5.0) as running:
        client = connected(running)
        assert client.call("Host.getAllTasksStatuses")["result"] == {}
        for late in (False, True):
            proxy.refuse(True)
            proxy.drop_all()
            wait_until(lambda: running.bridge.recovering, timeout_s=10, what="the loss noticed")
            client.send_request(request("late" if late else "held"))
            other = connected(running)  # the STOMP side keeps serving meanwhile
            if late:  # the broker stays away past the deadline: a 100 for the id, on time
                (answer,) = codec.loads(client.read_frame(timeout_s=10.0).body)
                assert (answer["id"], answer["error"]["code"]) == ("late", 100)
                assert "5s" in answer["error"]["message"]
            proxy.refuse(False)
            if not late:  # back within the deadline: published then, and answered
                (answer,) = codec.loads(client.read_frame(timeout_s=10.0).body)
                assert (answer["id"], answer["result"]) == ("held", {})
            wait_until(lambda: recovered(running, proxy), timeout_s=30, what="the door reconnected")
            assert other.call("Host.getAllTasksStatuses")["result"] == {}
            other.close()
        assert client.call("Host.getAllTasksStatuses")["result"] == {}
        assert running.door.pending == 0
        client.close()
