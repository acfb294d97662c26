"""Trust on the bus end to end (SPEC 15): a TLS RabbitMQ node of the test's own, loaded with what
``bus-tasks broker-setup`` prints (certificate login, least privilege), and every process wired
from its settings with identity = "broker": an aggregator, a subsystem that publishes and
answers control commands, an operator's client. The legitimate path works; a subsystem that
names another in its bodies is dead-lettered, and the view does not change."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.brokers import admin_of
from support.cli_helpers import BusTasksProcess, cli_env, run_cli
from support.factories import make_record
from support.tls_rabbit import TlsRabbit, start_tls_rabbit
from support.watchers import Watcher

from bus_tasks import names
from bus_tasks.aggregator import Aggregator
from bus_tasks.client import TasksClient
from bus_tasks.config import Settings
from bus_tasks.core.model import Event, State
from bus_tasks.errors import DeadlineExceeded, GeneralError
from bus_tasks.protocol import control, jsonrpc
from bus_tasks.protocol.changes import encode_change, feed_message
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator, wait_until
from bus_tasks.transport import Delivery
from bus_tasks.workers import wiring

pytestmark = pytest.mark.integration

VHOST = "bus"
TIMEOUT_S = 20.0
IDENTITIES = {
    "subsystem": ["vdsm", "gluster"],
    "aggregator": ["agg1"],
    "operator": ["engine"],
    "admin": ["ops"],
}


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRabbit]:
    for node in start_tls_rabbit(tmp_path_factory, VHOST):
        where = tmp_path_factory.mktemp("setup")
        flags = [arg for role, names_ in IDENTITIES.items() for name in names_ for arg in (f"--{role}", name)]
        done = run_cli("broker-setup", "--vhost", VHOST, *flags, cwd=where)
        assert done.returncode == 0, done.stderr
        (where / "bus.json").write_text(done.stdout)
        users = {name for names_ in IDENTITIES.values() for name in names_}
        node.node.import_definitions(where / "bus.json", vhost=VHOST, users=users)
        yield node


def settings_of(rabbit: TlsRabbit, identity: str, **more: Any) -> Settings:
    return rabbit.settings(identity, identity="broker", aggregators=["agg1"], **more)


@pytest.fixture
def aggregator(rabbit: TlsRabbit) -> Iterator[Aggregator]:
    settings = settings_of(rabbit, "agg1")
    running = Aggregator(
        wiring.connect(settings, confirm_publish=True), policy=wiring.aggregator_policy(settings)
    )
    with RunningAggregator(running, ready_timeout_s=TIMEOUT_S):
        yield running


@pytest.fixture
def vdsm(rabbit: TlsRabbit) -> Iterator[TaskPublisher]:
    """The vdsm subsystem: it publishes, and answers control commands in a thread of its own."""
    settings = settings_of(rabbit, "vdsm")
    publisher = TaskPublisher(wiring.connect(settings, confirm_publish=True), "vdsm")
    stopping: list[str] = []
    publisher.on_stop(stopping.append)  # it would end the task later; aborting is enough here
    publisher.control.trust = settings.trust
    stop = threading.Event()
    control = wiring.connect(settings, confirm_publish=True)
    thread = threading.Thread(target=publisher.serve_control, args=(control, stop), daemon=True)
    thread.start()
    try:
        yield publisher
    finally:
        stop.set()
        thread.join(TIMEOUT_S)
        control.close()
        publisher.connection.close()


def test_the_legitimate_path_works_with_least_privilege_over_tls(
    rabbit: TlsRabbit, aggregator: Aggregator, vdsm: TaskPublisher
) -> None:
    task = vdsm.create("copyImage", ["spm"])
    vdsm.flush(TIMEOUT_S)
    engine_settings = settings_of(rabbit, "engine")
    client = TasksClient(wiring.connect(engine_settings), timeout_s=TIMEOUT_S, trust=engine_settings.trust)
    with client as engine:
        wait_until(lambda: task.id in engine.get_all_tasks(), timeout_s=TIMEOUT_S, what="the task listed")
        wait_until(lambda: "vdsm" in engine.subsystems(), timeout_s=TIMEOUT_S, what="vdsm seen alive")
        assert engine.stop_task(task.id) is True  # forwarded to vdsm and answered by it
        wait_until(
            lambda: engine.get_task_details(task.id)["state"] == State.ABORTING,
            timeout_s=TIMEOUT_S,
            what="the task aborting",
        )
    assert aggregator.counts["events_refused_identity"] == 0


def dead_letter_reasons(rabbit: TlsRabbit, task_id: str) -> list[str]:
    """The reasons of the dead letters about ``task_id`` (taken off the queue by the admin)."""
    reasons: list[str] = []
    with wiring.connect(settings_of(rabbit, "ops"), confirm_publish=True) as ops:
        while (letter := admin_of(ops).get(names.DEAD_QUEUE)) is not None:
            letter.ack()
            if task_id.encode() in letter.body:
                reasons.append(letter.headers[names.HEADER_REASON])
    return reasons


@pytest.mark.parametrize(
    ("n", "exchange", "routing_key"),
    [
        (42, names.EVENTS_EXCHANGE, names.event_routing_key("gluster", "created")),  # its own key
        (43, "", names.EVENT_LOG),  # straight into the log: topic permissions do not apply
    ],
)
def test_a_subsystem_that_names_another_in_its_bodies_is_dead_lettered(
    rabbit: TlsRabbit, aggregator: Aggregator, n: int, exchange: str, routing_key: str
) -> None:
    forged = Event(event="created", seq=1, task=make_record(n, subsystem="vdsm"))
    with wiring.connect(settings_of(rabbit, "gluster"), confirm_publish=True) as gluster:
        # The broker lets it through; the body names vdsm.
        gluster.publish(
            forged.model_dump_json(by_alias=True).encode(), exchange=exchange, routing_key=routing_key
        )
        gluster.flush(TIMEOUT_S)
    reasons: list[str] = []

    def dead_lettered() -> bool:
        reasons.extend(dead_letter_reasons(rabbit, forged.task.id))
        return bool(reasons)

    wait_until(dead_lettered, timeout_s=TIMEOUT_S, what="the forged event dead-lettered")
    assert reasons == ["identity: 'gluster' may not speak for vdsm (event)"]
    assert forged.task.id not in aggregator.view


def test_a_control_reply_from_another_subsystem_is_not_believed(
    rabbit: TlsRabbit, aggregator: Aggregator
) -> None:
    # vdsm publishes but does not listen: a stop of its task waits for an answer.
    with wiring.connect(settings_of(rabbit, "vdsm"), confirm_publish=True) as connection:
        vdsm = TaskPublisher(connection, "vdsm")
        task = vdsm.create("copyImage", ["spm"])
        vdsm.flush(TIMEOUT_S)
    engine_settings = settings_of(rabbit, "engine")
    outcome: list[object] = []
    with TasksClient(wiring.connect(engine_settings), timeout_s=3.0, trust=engine_settings.trust) as engine:
        wait_until(lambda: task.id in aggregator.view, timeout_s=TIMEOUT_S, what="the task applied")

        def stop() -> None:
            try:
                outcome.append(engine.stop_task(task.id))
            except GeneralError as exc:
                outcome.append(exc)

        caller = threading.Thread(target=stop)
        caller.start()
        wait_until(lambda: aggregator.relay.pending, timeout_s=TIMEOUT_S, what="the stop forwarded")
        (control_id,) = list(aggregator.relay.pending)
        with wiring.connect(settings_of(rabbit, "gluster"), confirm_publish=True) as gluster:
            gluster.publish(
                jsonrpc.result_body(control_id, True),
                routing_key=aggregator.relay.replies,
                correlation_id=control_id,
                persistent=False,
            )
            gluster.flush(TIMEOUT_S)
        caller.join(TIMEOUT_S)
    assert [type(o) for o in outcome] == [GeneralError]  # code 100: vdsm never answered
    assert aggregator.counts["control_replies_refused_identity"] == 1


def test_a_client_believes_replies_from_aggregators_only(rabbit: TlsRabbit) -> None:
    # gluster, reading its own control queue, answers a call put there as if it were an aggregator.
    queue = names.control_queue("gluster")
    answered: list[Delivery] = []
    with wiring.connect(settings_of(rabbit, "gluster"), confirm_publish=True) as gluster:

        def answer(delivery: Delivery) -> None:
            request = jsonrpc.parse_request(delivery.body)
            gluster.publish(
                jsonrpc.result_body(jsonrpc.request_id_of(request), {}),
                routing_key=delivery.reply_to or "",
                correlation_id=delivery.correlation_id,
                persistent=False,
            )
            delivery.ack()
            answered.append(delivery)

        gluster.consume(queue, answer)
        engine_settings = settings_of(rabbit, "engine")
        engine = TasksClient(
            wiring.connect(engine_settings), timeout_s=3.0, rpc_queue=queue, trust=engine_settings.trust
        )
        done = threading.Event()

        def call() -> None:
            try:
                engine.get_all_tasks()
            except DeadlineExceeded:
                done.set()

        caller = threading.Thread(target=call)
        caller.start()
        wait_until(
            lambda: gluster.drain(0.1) and bool(answered), timeout_s=TIMEOUT_S, what="gluster answered"
        )
        caller.join(TIMEOUT_S)
        engine.close()
    assert done.is_set(), "the client took gluster's answer"


def test_a_control_command_from_a_caller_is_not_carried_out(
    rabbit: TlsRabbit, aggregator: Aggregator, vdsm: TaskPublisher
) -> None:
    task = vdsm.create("copyImage", ["spm"])
    vdsm.flush(TIMEOUT_S)
    wait_until(lambda: task.id in aggregator.view, timeout_s=TIMEOUT_S, what="the task applied")
    with wiring.connect(settings_of(rabbit, "engine"), confirm_publish=True) as engine:
        # Straight into vdsm's control queue through the default exchange, which the broker allows.
        engine.publish(
            control.command_body("forged", "stop", task.id, None),
            routing_key=names.control_queue("vdsm"),
            persistent=False,
        )
        engine.flush(TIMEOUT_S)
    reason = "identity: 'engine' is not an aggregator (control command of vdsm)"
    reasons: list[str] = []  # the dead letters of earlier tests of this node come first
    with wiring.connect(settings_of(rabbit, "ops"), confirm_publish=True) as ops:

        def dead_lettered() -> bool:
            while (letter := admin_of(ops).get(names.DEAD_QUEUE)) is not None:
                letter.ack()
                reasons.append(letter.headers[names.HEADER_REASON])
            return reason in reasons

        wait_until(dead_lettered, timeout_s=TIMEOUT_S, what="the forged command dead-lettered")
    assert vdsm.get(task.id).state == State.INIT


def process_env(rabbit: TlsRabbit, identity: str) -> dict[str, str]:
    """The environment that makes a ``bus-tasks`` process ``identity`` on the TLS node."""
    paths = rabbit.client_files(identity)
    return cli_env(
        BUS_TASKS_BROKER_URL=f"amqps://127.0.0.1:{rabbit.node.tls_port}/{VHOST}",
        BUS_TASKS_BROKER_SSL_CA=str(paths["ca"]),
        BUS_TASKS_BROKER_SSL_CERT=str(paths["cert"]),
        BUS_TASKS_BROKER_SSL_KEY=str(paths["key"]),
        BUS_TASKS_BROKER_LOGIN_METHOD="EXTERNAL",
        BUS_TASKS_IDENTITY="broker",
        BUS_TASKS_AGGREGATORS='["agg1"]',
    )


def test_serve_simulate_and_the_cli_run_as_their_identities(rabbit: TlsRabbit, tmp_path: Path) -> None:
    envs = {name: process_env(rabbit, name) for name in ("agg1", "vdsm", "engine")}
    serve = BusTasksProcess(
        "serve", "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0", cwd=tmp_path, env=envs["agg1"]
    )
    processes = [serve]
    try:
        serve.wait_for_line("aggregator ready", timeout_s=TIMEOUT_S)
        simulate = BusTasksProcess(
            "simulate", "storage", "--tasks", "2", "--interval", "0.05", cwd=tmp_path, env=envs["vdsm"]
        )
        processes.append(simulate)

        def listed() -> dict[str, Any] | None:
            done = run_cli("tasks", "--json", cwd=tmp_path, env=envs["engine"])
            assert done.returncode == 0, done.stderr
            tasks: dict[str, Any] = json.loads(done.stdout)
            simulated = {k: v for k, v in tasks.items() if v["verb"] in ("createVolume", "copyImage")}
            return simulated or None

        tasks = wait_until(listed, timeout_s=TIMEOUT_S, what="the simulated tasks listed by the CLI")
        assert tasks is not None
        assert {task["subsystem"] for task in tasks.values()} == {"vdsm"}
        # The HTTP front door's own RPC connection believes the aggregator's replies too.
        url = serve.lines[serve.wait_for_line("http serving on", timeout_s=TIMEOUT_S)].rsplit(" ", 1)[1]
        with urllib.request.urlopen(f"{url}/api/tasks", timeout=TIMEOUT_S) as response:
            served: dict[str, Any] = json.loads(response.read())
        assert "vdsm" in {task["subsystem"] for task in served.values()}  # the simulator's tasks move on
    finally:
        for process in processes:
            process.terminate()
    logs = serve.log + simulate.log
    # Nothing of theirs refused (the log also holds earlier tests' forgeries, refused again).
    assert "identity: 'vdsm'" not in serve.log
    assert "identity: 'agg1'" not in serve.log
    assert 'identity = "off"' not in logs
    for name in ("agg1", "vdsm"):
        assert str(Path(envs[name]["BUS_TASKS_BROKER_SSL_KEY"]).parent) not in logs


def test_a_watcher_follows_only_what_aggregators_feed(
    rabbit: TlsRabbit, aggregator: Aggregator, vdsm: TaskPublisher
) -> None:
    engine_settings = settings_of(rabbit, "engine")
    client = TasksClient(wiring.connect(engine_settings), timeout_s=TIMEOUT_S, trust=engine_settings.trust)
    watcher = Watcher(client, client.watch(["spm"]))
    try:
        wait_until(lambda: watcher.kinds()[:1] == ["listing"], timeout_s=TIMEOUT_S, what="the listing")
        following = watcher.watch.state.following
        assert following is not None
        queues = rabbit.node.ctl("list_queues", "-s", "-p", VHOST, "name").split()
        (queue,) = [name for name in queues if name.startswith(names.WATCH_QUEUE_PREFIX)]
        fake = make_record(77)
        head = {"aggregator": following.aggregator, "instance": following.instance, "log": following.log}
        forged = feed_message(
            {
                **head,
                "rpcQueue": following.rpc_queue,
                "after": watcher.revision,
                "revision": watcher.revision + 1,
            },
            [encode_change(watcher.revision + 1, fake.id, json.dumps({"id": fake.id}).encode(), ["spm"])],
        )
        with wiring.connect(settings_of(rabbit, "gluster"), confirm_publish=True) as gluster:
            # Straight into the watcher's queue through the default exchange, which the broker allows.
            gluster.publish(forged, routing_key=queue, persistent=False)
            gluster.flush(TIMEOUT_S)
        task = vdsm.create("copyImage", ["spm"])
        vdsm.flush(TIMEOUT_S)
        wait_until(lambda: task.id in watcher.tasks, timeout_s=TIMEOUT_S, what="the real change watched")
        assert watcher.error is None
        assert fake.id not in watcher.tasks
    finally:
        watcher.stop()
