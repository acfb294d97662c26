"""Who may call what on a TLS RabbitMQ node of the test's own (SPEC 15 and 16): the users
``bus-tasks broker-setup`` makes (certificate login, least privilege), every process wired from
its settings with identity = "broker" and authorization = "on". Over AMQP each role and an
identity in no role calls what the table allows; over STOMP a trusted front door speaks for its
clients' certificates, a front door not in ``front_doors`` cannot."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support.cli_helpers import run_cli
from support.tls_rabbit import TlsRabbit, start_tls_rabbit
from support.vdsm_stomp import RawVdsmClient
from test_authorization_on_rabbit import EVERY_CALL, FORCED_CLEAR, MAY, method_of

from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.config import Settings
from bus_tasks.core.model import State
from bus_tasks.errors import BusTasksError, PermissionDenied
from bus_tasks.frontdoors.stomp.running import RunningFrontDoor
from bus_tasks.protocol.methods import MethodName
from bus_tasks.store import NullStore
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.workers import wiring

pytestmark = pytest.mark.integration

M = MethodName
VHOST = "bus"
TIMEOUT_S = 20.0
# broker-setup's users; "mallory" is a reader on the broker but in no role of bus_tasks.
BROKER_USERS = {
    "subsystem": ["vdsm"],
    "aggregator": ["agg1"],
    "reader": ["rita", "mallory"],
    "operator": ["engine"],
    "admin": ["ops"],
    "front-door": ["stompdoor", "rogue"],
}
AUTHORIZATION: dict[str, Any] = {
    "authorization": "on",
    "readers": ["rita"],
    "operators": ["engine"],
    "admins": ["ops"],
    "front_doors": ["stompdoor"],  # not "rogue"
}
ROLE_OF = {"reader": "rita", "operator": "engine", "admin": "ops", "unknown": "mallory"}


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRabbit]:
    for node in start_tls_rabbit(tmp_path_factory, VHOST):
        where = tmp_path_factory.mktemp("setup")
        flags = [
            arg for role, names_ in BROKER_USERS.items() for name in names_ for arg in (f"--{role}", name)
        ]
        done = run_cli("broker-setup", "--vhost", VHOST, *flags, cwd=where)
        assert done.returncode == 0, done.stderr
        (where / "bus.json").write_text(done.stdout)
        users = {name for names_ in BROKER_USERS.values() for name in names_}
        node.node.import_definitions(where / "bus.json", vhost=VHOST, users=users)
        yield node


def settings_of(rabbit: TlsRabbit, identity: str) -> Settings:
    return rabbit.settings(identity, identity="broker", aggregators=["agg1"], **AUTHORIZATION)


class Scene:
    """The aggregator (wired as serve wires it), vdsm answering its commands, a running and a
    finished task."""

    def __init__(self, rabbit: TlsRabbit, aggregator: Aggregator, vdsm: TaskPublisher) -> None:
        self.rabbit = rabbit
        self.aggregator = aggregator
        self.stopped: list[str] = []
        vdsm.on_stop(self.stopped.append)
        vdsm.on_revert(lambda task_id: None)
        self.running = vdsm.create("copyImage", ["spm"], state=State.RUNNING).id
        self.finished = vdsm.create("copyImage", ["spm"], state=State.RUNNING).id
        vdsm.finish(self.finished)
        vdsm.flush(TIMEOUT_S)
        view = aggregator.view
        wait_until(
            lambda: self.running in view and self.finished in view and view.get(self.finished).state.is_done,
            timeout_s=TIMEOUT_S,
            what="both tasks in the view",
        )

    def params(self, call: str) -> dict[str, Any]:
        task = self.finished if call in (M.REVERT, M.CLEAR) else self.running
        if call == M.RETAG:
            return {"taskID": task, "tags": ["retagged"]}
        if call == FORCED_CLEAR:
            return {"taskID": task, "force": True}
        if call in (M.GET_STATUS, M.GET_INFO, M.GET_DETAILS, M.STOP, M.REVERT, M.CLEAR):
            return {"taskID": task}
        return {"spUUID": "x"} if call in (M.GET_ALL_TASKS_INFO, M.GET_ALL_TASKS_STATUSES) else {}


@pytest.fixture
def scene(rabbit: TlsRabbit) -> Iterator[Scene]:
    settings = settings_of(rabbit, "agg1")
    aggregator = wiring.aggregator(settings, store=NullStore())
    vdsm_settings = settings_of(rabbit, "vdsm")
    vdsm = TaskPublisher(wiring.connect(vdsm_settings, confirm_publish=True), "vdsm")
    vdsm.control.trust = vdsm_settings.trust
    stop = threading.Event()
    control = wiring.connect(vdsm_settings, confirm_publish=True)
    thread = threading.Thread(target=vdsm.serve_control, args=(control, stop), daemon=True)
    with RunningAggregator(aggregator, ready_timeout_s=TIMEOUT_S):
        thread.start()
        try:
            yield Scene(rabbit, aggregator, vdsm)
        finally:
            stop.set()
            thread.join(TIMEOUT_S)
            control.close()
            vdsm.connection.close()


@pytest.mark.parametrize("role", list(ROLE_OF))
def test_over_amqp_by_certificate_each_role_calls_what_the_table_allows(scene: Scene, role: str) -> None:
    identity = ROLE_OF[role]
    settings = settings_of(scene.rabbit, identity)
    with TasksClient(wiring.connect(settings), timeout_s=TIMEOUT_S, trust=settings.trust) as client:
        for call in EVERY_CALL:
            try:
                client.call(method_of(call), scene.params(call))
                error: BusTasksError | None = None
            except BusTasksError as exc:
                error = exc
            if call in MAY[role]:
                assert not isinstance(error, PermissionDenied), (call, error)
            else:
                assert isinstance(error, PermissionDenied), (call, error)
                assert error.message == f"Permission denied: {identity} may not call {call}"
    if M.STOP not in MAY[role]:
        assert scene.aggregator.view.get(scene.running).state is State.RUNNING
        assert scene.stopped == []


def stomp_door(scene: Scene, identity: str, server_context: ssl.SSLContext) -> RunningFrontDoor:
    """``bus-tasks stomp`` as the broker user ``identity``, requiring client certificates."""
    connection = wiring.connect(settings_of(scene.rabbit, identity))
    return RunningFrontDoor(connection, timeout_s=TIMEOUT_S, ssl_context=server_context)


def stomp_client(scene: Scene, port: int, common_name: str) -> RawVdsmClient:
    context = ssl.create_default_context()
    scene.rabbit.ca.configure_trust(context)
    scene.rabbit.ca.issue_cert("client.example", common_name=common_name).configure_cert(context)
    client = RawVdsmClient(port, ssl_context=context, timeout_s=TIMEOUT_S)
    assert client.connect().command == "CONNECTED"
    return client


@pytest.fixture
def server_context(rabbit: TlsRabbit) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    rabbit.ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    rabbit.ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_over_stomp_the_front_door_speaks_for_its_clients_certificates(
    scene: Scene, server_context: ssl.SSLContext
) -> None:
    with stomp_door(scene, "stompdoor", server_context) as door:
        reader, operator = stomp_client(scene, door.port, "rita"), stomp_client(scene, door.port, "engine")
        try:
            denied = reader.call(M.STOP, scene.params(M.STOP))
            listed = reader.call(M.GET_STATUS, scene.params(M.GET_STATUS))
            assert scene.stopped == []
            stopped = operator.call(M.STOP, scene.params(M.STOP))
        finally:
            reader.close()
            operator.close()
    assert denied["error"] == {"code": -32011, "message": "Permission denied: rita may not call Task.stop"}
    assert listed["result"]["taskID"] == scene.running
    assert stopped["result"] is True
    wait_until(lambda: scene.stopped == [scene.running], timeout_s=TIMEOUT_S, what="vdsm told to stop")


def test_a_front_door_not_in_front_doors_cannot_speak_for_its_clients(
    scene: Scene, server_context: ssl.SSLContext
) -> None:
    with stomp_door(scene, "rogue", server_context) as door:
        operator = stomp_client(scene, door.port, "engine")
        try:
            reply = operator.call(M.STOP, scene.params(M.STOP))
        finally:
            operator.close()
    assert reply["error"] == {"code": -32011, "message": "Permission denied: rogue may not call Task.stop"}
    assert scene.aggregator.view.get(scene.running).state is State.RUNNING
    assert scene.stopped == []


def test_an_admin_injects_test_tasks_and_they_are_applied(scene: Scene) -> None:
    settings = settings_of(scene.rabbit, "ops")
    with wiring.connect(settings, confirm_publish=True) as connection:
        publisher = TaskPublisher(connection, settings.test_subsystem)  # as bus-tasks inject does
        injected = publisher.create("testTask", ["injected"], state=State.RUNNING).id
        publisher.flush(TIMEOUT_S)
    wait_until(lambda: injected in scene.aggregator.view, timeout_s=TIMEOUT_S, what="the test task applied")
    assert scene.aggregator.counts["events_refused_identity"] == 0
