"""Who may call what (SPEC 16) on the real RabbitMQ: a vhost of the test's own and broker users of
their own (made with rabbitmqctl, with passwords: RabbitMQ validates every user_id), over AMQP
and over the STOMP front door with client certificates. For each role and an unknown identity,
every method is allowed or denied as the table says; a denied stop leaves the task running; a
second front door not in ``front_doors`` cannot speak for its clients.

The same on a TLS node of the tests' own, with broker-setup's certificate users and identity =
"broker": test_authorization_tls.py. Here the shared node, a vhost and password users (RabbitMQ
validates ``user_id`` the same way) cover every door at less cost.
"""

from __future__ import annotations

import secrets
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
from support.brokers import Broker, System, delete_rabbitmq_queues, rabbitmqctl
from support.metrics import metric
from support.vdsm_stomp import RawVdsmClient

from bus_tasks import transport
from bus_tasks.aggregator import Aggregator
from bus_tasks.aggregator.authorization import Authorization
from bus_tasks.authorization import Roles
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.errors import BusTasksError, PermissionDenied
from bus_tasks.frontdoors.stomp.running import RunningFrontDoor
from bus_tasks.protocol.methods import MethodName
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.transport import BusOptions

pytestmark = pytest.mark.integration

TIMEOUT_S = 10.0
KINDS = ("reader", "operator", "admin", "unknown", "front", "rogue")
M = MethodName
FORCED_CLEAR = "Task.clear(force)"
READS = [
    M.GET_ALL_TASKS,
    M.GET_ALL_TASKS_INFO,
    M.GET_ALL_TASKS_STATUSES,
    M.GET_TASK_CHANGES,
    M.GET_SUBSYSTEMS,
    M.GET_AGGREGATORS,
    M.GET_STATUS,
    M.GET_INFO,
    M.GET_DETAILS,
]
# In this order: what a call changes comes after what needs it unchanged.
EVERY_CALL = [*READS, M.REVERT, M.RETAG, M.STOP, M.CLEAR, FORCED_CLEAR]
MAY: dict[str, set[str]] = {
    "reader": set(READS),
    "operator": {*READS, M.REVERT, M.STOP, M.CLEAR},
    "admin": set(EVERY_CALL),
    "unknown": set(),
}


@dataclass
class Users:
    """Broker users of this test (``authz_<tag>_<kind>``) with their passwords, on ``vhost``."""

    vhost: str
    names: dict[str, str]
    passwords: dict[str, str]

    def url(self, kind: str) -> str:
        return f"amqp://{self.names[kind]}:{self.passwords[kind]}@127.0.0.1:5672/{self.vhost}"

    def roles(self) -> Roles:
        return Roles.of(
            readers=[self.names["reader"]], operators=[self.names["operator"]], admins=[self.names["admin"]]
        )


@pytest.fixture(scope="module")
def users(rabbitmq_vhost: str) -> Iterator[Users]:
    tag = uuid.uuid4().hex[:8]
    made = Users(rabbitmq_vhost, {}, {})
    try:
        for kind in KINDS:
            name, password = f"authz_{tag}_{kind}", secrets.token_hex(16)
            rabbitmqctl("add_user", name, password)
            made.names[kind], made.passwords[kind] = name, password
            rabbitmqctl("set_permissions", "-p", rabbitmq_vhost, name, ".*", ".*", ".*")
        yield made
    finally:
        for name in made.names.values():
            rabbitmqctl("delete_user", name)


@dataclass
class Scene:
    """An aggregator with authorization on, a subsystem that counts the commands it carries out,
    a running task and a finished one."""

    system: System
    aggregator: Aggregator
    users: Users
    running: str
    finished: str
    carried_out: list[tuple[str, str]]

    def params(self, call: str) -> dict[str, Any]:
        if call in (M.REVERT, M.CLEAR):
            return {"taskID": self.finished}
        if call == M.RETAG:
            return {"taskID": self.running, "tags": ["retagged"]}
        if call == FORCED_CLEAR:
            return {"taskID": self.running, "force": True}
        if call in (M.GET_STATUS, M.GET_INFO, M.GET_DETAILS, M.STOP):
            return {"taskID": self.running}
        if call in (M.GET_ALL_TASKS_INFO, M.GET_ALL_TASKS_STATUSES):
            return {"spUUID": "x"}
        return {}

    def task_state(self, task_id: str) -> State:
        return self.aggregator.view.get(task_id).state


@pytest.fixture
def rabbitmq_broker(users: Users) -> Iterator[Broker]:
    """This module's broker is the vhost its users may use (the run's vhost, emptied after each
    test), not a fresh one of each test: their permissions are set once, for the module."""
    broker = Broker("rabbitmq", f"amqp://guest:guest@127.0.0.1:5672/{users.vhost}")
    yield broker
    broker.close_all()
    delete_rabbitmq_queues(users.vhost)


@pytest.fixture
def scene(rabbitmq_broker: Broker, users: Users) -> Iterator[Scene]:
    aggregator = Aggregator(
        rabbitmq_broker.connection(),
        call_policy=Authorization(users.roles()),
        front_doors=frozenset({users.names["front"]}),
    )
    with RunningAggregator(aggregator):
        system = System(rabbitmq_broker, aggregator)
        try:
            pub = system.publisher("vdsm")
            carried_out: list[tuple[str, str]] = []
            pub.on_stop(lambda task_id: carried_out.append(("stop", task_id)))
            pub.on_revert(lambda task_id: carried_out.append(("revert", task_id)))
            system.listen(pub)
            running = pub.create("copyImage", tags=["spm"], state=State.RUNNING).id
            finished = pub.create("copyImage", tags=["spm"]).id
            pub.finish(finished)
            wait_until(
                lambda: (
                    running in aggregator.view
                    and finished in aggregator.view
                    and aggregator.view.get(finished).state.is_done
                ),
                timeout_s=TIMEOUT_S,
                what="both tasks in the view",
            )
            yield Scene(system, aggregator, users, running, finished, carried_out)
        finally:
            system.stop_threads()


def outcome(make_call: Callable[[], Any]) -> BusTasksError | None:
    try:
        make_call()
    except BusTasksError as exc:
        return exc
    return None


def method_of(call: str) -> str:
    return M.CLEAR if call == FORCED_CLEAR else call


@pytest.mark.parametrize("kind", list(MAY))
def test_over_amqp_each_role_calls_what_the_table_allows(scene: Scene, kind: str) -> None:
    identity = scene.users.names[kind]
    with TasksClient(transport.open(scene.users.url(kind)), timeout_s=TIMEOUT_S) as client:
        for call in EVERY_CALL:
            error = outcome(lambda call=call: client.call(method_of(call), scene.params(call)))  # type: ignore[misc]
            if call in MAY[kind]:
                assert not isinstance(error, PermissionDenied), (call, error)
            else:
                assert isinstance(error, PermissionDenied), (call, error)
                assert error.message == f"Permission denied: {identity} may not call {call}"

    if M.STOP not in MAY[kind]:  # a denied stop leaves the task running, nobody was told
        assert scene.task_state(scene.running) is State.RUNNING
        assert scene.carried_out == []
        assert metric(scene.aggregator, "bus_tasks_rpc_requests_total", method=M.STOP, outcome="denied") == 1
    else:
        wait_until(
            lambda: ("stop", scene.running) in scene.carried_out,
            timeout_s=TIMEOUT_S,
            what="the stop carried out",
        )


# -- STOMP: client certificates, asserted by a front door ---------------------------------------


@pytest.fixture
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    """A throwaway CA and a server context that requires client certificates it signed."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return ca, context


def stomp_client(port: int, ca: trustme.CA, common_name: str) -> RawVdsmClient:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    ca.issue_cert("client.example", common_name=common_name).configure_cert(context)
    client = RawVdsmClient(port, ssl_context=context, timeout_s=TIMEOUT_S)
    assert client.connect().command == "CONNECTED"
    return client


@pytest.mark.parametrize("kind", list(MAY))
def test_over_stomp_each_certificates_cn_calls_what_its_role_allows(
    scene: Scene, tls: tuple[trustme.CA, ssl.SSLContext], kind: str
) -> None:
    ca, server_context = tls
    identity = scene.users.names[kind]  # the CN of the client's certificate
    front = transport.open(scene.users.url("front"), BusOptions(confirm_publish=False))
    with RunningFrontDoor(front, timeout_s=TIMEOUT_S, ssl_context=server_context) as door:
        client = stomp_client(door.port, ca, identity)
        try:
            for call in EVERY_CALL:
                reply = client.call(method_of(call), scene.params(call))
                code = reply.get("error", {}).get("code")
                if call in MAY[kind]:
                    assert code != PermissionDenied.code, (call, reply)
                else:
                    assert reply["error"] == {
                        "code": PermissionDenied.code,
                        "message": f"Permission denied: {identity} may not call {call}",
                    }, call
        finally:
            client.close()
    if M.STOP not in MAY[kind]:
        assert scene.task_state(scene.running) is State.RUNNING
        assert scene.carried_out == []


def test_a_front_door_not_in_front_doors_cannot_speak_for_its_clients(
    scene: Scene, tls: tuple[trustme.CA, ssl.SSLContext]
) -> None:
    ca, server_context = tls
    rogue = transport.open(scene.users.url("rogue"), BusOptions(confirm_publish=False))
    operator = scene.users.names["operator"]
    with RunningFrontDoor(rogue, timeout_s=TIMEOUT_S, ssl_context=server_context) as door:
        client = stomp_client(door.port, ca, operator)  # an operator's certificate ...
        try:
            reply = client.call(M.STOP, scene.params(M.STOP))
            listing = client.call(M.GET_ALL_TASKS)
        finally:
            client.close()
    rogue_name = scene.users.names["rogue"]
    # ... judged as the door's own call, and the door holds no role
    assert reply["error"] == {
        "code": -32011,
        "message": f"Permission denied: {rogue_name} may not call Task.stop",
    }
    assert listing["error"]["code"] == -32011
    assert scene.task_state(scene.running) is State.RUNNING
    assert scene.carried_out == []


def test_a_client_cannot_say_it_calls_for_someone_else_over_amqp(scene: Scene) -> None:
    """A front door's headers on a plain client's request: the call stays the sender's own."""
    reader = scene.users.url("reader")
    connection = transport.open(reader, BusOptions(confirm_publish=False))
    with RunningFrontDoor(connection, timeout_s=TIMEOUT_S) as door:  # a "door" run by a reader
        client = RawVdsmClient(door.port, timeout_s=TIMEOUT_S)
        try:
            client.connect()
            stop = client.call(M.STOP, scene.params(M.STOP))
            status = client.call(M.GET_STATUS, scene.params(M.GET_STATUS))
        finally:
            client.close()
    assert (
        stop["error"]["message"] == f"Permission denied: {scene.users.names['reader']} may not call Task.stop"
    )
    assert status["result"]["taskID"] == scene.running  # the sender's own role still counts
    assert scene.task_state(scene.running) is State.RUNNING
