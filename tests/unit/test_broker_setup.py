"""``bus-tasks broker-setup``: the definitions document, its least privilege as regexes, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest

from bus_tasks import names
from bus_tasks.broker_setup import Deployment, SetupError, definitions, password_hash
from bus_tasks.workers.broker_setup import vhost_of
from bus_tasks.workers.cli import main

DEPLOYMENT = Deployment(
    subsystems=("vdsm", "gluster", "a"),
    aggregators=("agg1",),
    readers=("reader1",),
    operators=("engine",),
    admins=("ops",),
    front_doors=("stomp-door",),
    vhost="bus",
)


def grants(document: dict[str, Any], user: str) -> dict[str, str]:
    (entry,) = [p for p in document["permissions"] if p["user"] == user]
    return {k: entry[k] for k in ("configure", "write", "read")}


def topic_write(document: dict[str, Any], user: str, exchange: str = names.EVENTS_EXCHANGE) -> str | None:
    found = [t for t in document["topic_permissions"] if t["user"] == user and t["exchange"] == exchange]
    return found[0]["write"] if found else None


def rabbit_allows(pattern: str | None, name: str) -> bool:
    """RabbitMQ's reading of a permission: an unanchored regex search, "" granting nothing; no
    topic permission for an exchange allows every key."""
    if pattern is None:
        return True
    return pattern != "" and re.search(pattern, name) is not None


def test_password_hash_is_rabbitmqs_sha256_form() -> None:
    # The worked example of RabbitMQ's documentation (passwords: "computing a hash").
    assert (
        password_hash("test12", bytes.fromhex("908DC60A"))
        == "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    )


def test_password_hash_salts_each_password_afresh() -> None:
    first, second = password_hash("same"), password_hash("same")
    assert first != second
    raw = base64.b64decode(first)
    assert raw[4:] == hashlib.sha256(raw[:4] + b"same").digest()


def test_users_log_in_by_certificate_unless_given_passwords() -> None:
    document = definitions(Deployment(subsystems=("vdsm",), aggregators=("agg1",)))
    assert document["users"] == [
        {"name": name, "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
        for name in ("vdsm", "agg1")
    ]
    with_passwords = definitions(Deployment(subsystems=("vdsm",)), {"vdsm": "secret-pw"})
    (user,) = with_passwords["users"]
    raw = base64.b64decode(user["password_hash"])
    assert raw[4:] == hashlib.sha256(raw[:4] + b"secret-pw").digest()
    assert "secret-pw" not in json.dumps(with_passwords)


def test_the_topology_is_the_one_the_processes_declare() -> None:
    document = definitions(Deployment(subsystems=("vdsm",), vhost="bus", queue_type="quorum"))
    assert document["vhosts"] == [{"name": "bus"}]
    assert document["exchanges"] == [
        {"name": name, "vhost": "bus", "type": kind, "durable": True, "auto_delete": False, "internal": False}
        | {"arguments": {}}
        for name, kind in (
            (names.EVENTS_EXCHANGE, "topic"),
            (names.CONTROL_EXCHANGE, "direct"),
            (names.CHANGES_EXCHANGE, "topic"),
        )
    ]
    queue = {"vhost": "bus", "durable": True, "auto_delete": False}
    assert document["queues"] == [
        {"name": names.EVENT_LOG, **queue, "arguments": {"x-queue-type": "stream", "x-max-age": "7D"}},
        {"name": names.RPC_QUEUE, **queue, "arguments": {"x-queue-type": "quorum"}},
        {"name": names.DEAD_QUEUE, **queue, "arguments": {"x-queue-type": "quorum"}},
        # Replicated too: a classic one whose node is down could not be used from another.
        {"name": "bus_tasks.control.vdsm", **queue, "arguments": {"x-queue-type": "quorum"}},
        {"name": "bus_tasks.control.test", **queue, "arguments": {"x-queue-type": "quorum"}},
    ]
    binding = {"vhost": "bus", "destination_type": "queue", "arguments": {}}
    assert document["bindings"] == [
        {"source": names.EVENTS_EXCHANGE, "destination": names.EVENT_LOG, "routing_key": "task.#", **binding},
        *[
            {
                "source": names.CONTROL_EXCHANGE,
                "destination": f"bus_tasks.control.{s}",
                "routing_key": key,
                **binding,
            }
            for s in ("vdsm", "test")
            for key in ("*", s)
        ],
    ]


SUBSYSTEM_KEYS = [
    ("vdsm", "task.vdsm.created", True),
    ("vdsm", "task.vdsm.updated", True),
    ("vdsm", "task.vdsm.finished", True),
    ("vdsm", "task.vdsm.cleared", True),
    ("vdsm", "task.vdsm.announced", True),
    ("vdsm", "subsystem.vdsm.heartbeat", True),
    ("vdsm", "task.gluster.created", False),
    ("vdsm", "subsystem.gluster.heartbeat", False),
    ("vdsm", "task.vdsmx.created", False),
    ("vdsm", "task.vdsm.created.more", False),
    ("vdsm", "xtask.vdsm.created", False),
    ("vdsm", "aggregator.vdsm.beat", False),
    ("vdsm", "task.vdsm.other", False),
    # A subsystem whose name is the start of another's does not get the other's keys.
    ("a", "task.a.created", True),
    ("a", "task.a.b.created", False),
    ("a", "task.a.vdsm.created", False),
    # An aggregator publishes clears of any task, test tasks and its beats, nothing else.
    ("agg1", "task.vdsm.cleared", True),
    ("agg1", "task.gluster.cleared", True),
    ("agg1", "task.test.created", True),
    ("agg1", "aggregator.agg1.beat", True),
    ("agg1", "task.vdsm.created", False),
    ("agg1", "subsystem.vdsm.heartbeat", False),
    # An admin injects test tasks only.
    ("ops", "task.test.created", True),
    ("ops", "task.vdsm.created", False),
]


@pytest.mark.parametrize(("user", "key", "allowed"), SUBSYSTEM_KEYS)
def test_topic_permissions_give_each_publisher_only_its_routing_keys(
    user: str, key: str, allowed: bool
) -> None:
    document = definitions(DEPLOYMENT)
    assert rabbit_allows(grants(document, user)["write"], names.EVENTS_EXCHANGE)
    assert rabbit_allows(topic_write(document, user), key) is allowed


REPLY = "bus_tasks.reply." + "0123456789abcdef" * 2
WATCH = "bus_tasks.watch." + "0123456789abcdef" * 2
PRESENCE = "bus_tasks.presence." + "0123456789abcdef" * 2

RESOURCES = [
    # who, what, resource, allowed
    ("vdsm", "read", "bus_tasks.control.vdsm", True),
    ("vdsm", "read", "bus_tasks.control.gluster", False),
    ("vdsm", "read", names.RPC_QUEUE, False),
    ("vdsm", "read", names.EVENT_LOG, False),
    ("vdsm", "configure", "bus_tasks.claim.bus_tasks.control.vdsm", True),
    ("vdsm", "configure", "bus_tasks.claim.bus_tasks.control.gluster", False),
    ("vdsm", "configure", names.EVENTS_EXCHANGE, False),
    ("vdsm", "configure", "bus_tasks.control.vdsm", False),
    ("vdsm", "configure", "mine", False),
    ("vdsm", "write", names.CONTROL_EXCHANGE, False),
    ("vdsm", "write", names.CHANGES_EXCHANGE, False),
    ("vdsm", "write", "amq.default", True),  # control replies (the aggregator checks user_id)
    ("agg1", "read", names.EVENT_LOG, True),
    ("agg1", "read", names.RPC_QUEUE, True),
    ("agg1", "read", "bus_tasks.control.test", True),
    ("agg1", "read", "bus_tasks.control.vdsm", False),
    ("agg1", "read", names.DEAD_QUEUE, False),
    ("agg1", "configure", PRESENCE, True),
    ("agg1", "configure", names.EVENT_LOG, False),
    ("agg1", "configure", names.RPC_QUEUE, False),
    ("agg1", "configure", names.EVENTS_EXCHANGE, False),
    ("agg1", "write", names.CONTROL_EXCHANGE, True),
    ("agg1", "write", names.CHANGES_EXCHANGE, True),
    *[
        (caller, what, resource, allowed)
        for caller in ("reader1", "engine", "stomp-door", "ops")
        for what, resource, allowed in (
            ("configure", REPLY, True),
            ("configure", WATCH, True),
            ("configure", "bus_tasks.reply.not-a-uuid", False),
            ("configure", names.RPC_QUEUE, False),
            ("write", "amq.default", True),
            ("write", WATCH, True),
            ("write", names.CONTROL_EXCHANGE, False),
            ("write", names.CHANGES_EXCHANGE, False),
            ("read", names.CHANGES_EXCHANGE, True),
            ("read", names.RPC_QUEUE, False),
            ("read", names.EVENT_LOG, False),
            ("read", names.EVENTS_EXCHANGE, False),
            ("read", "bus_tasks.control.vdsm", False),
        )
    ],
    ("reader1", "write", names.EVENTS_EXCHANGE, False),
    ("engine", "read", names.DEAD_QUEUE, False),
    ("ops", "read", names.DEAD_QUEUE, True),
    ("ops", "write", names.EVENTS_EXCHANGE, True),
]


@pytest.mark.parametrize(("user", "what", "resource", "allowed"), RESOURCES)
def test_permissions_are_least_privilege(user: str, what: str, resource: str, allowed: bool) -> None:
    assert rabbit_allows(grants(definitions(DEPLOYMENT), user)[what], resource) is allowed


def test_without_a_test_subsystem_admins_publish_nothing() -> None:
    document = definitions(Deployment(admins=("ops",), aggregators=("agg1",), test_subsystem=""))
    assert not rabbit_allows(grants(document, "ops")["write"], names.EVENTS_EXCHANGE)
    assert not rabbit_allows(topic_write(document, "agg1"), "task.test.created")
    assert [q["name"] for q in document["queues"]] == [names.EVENT_LOG, names.RPC_QUEUE, names.DEAD_QUEUE]


@pytest.mark.parametrize(
    ("deployment", "message"),
    [
        (Deployment(subsystems=("vdsm",), readers=("vdsm",)), "'vdsm' is given as subsystem and as reader"),
        (Deployment(admins=("x", "x")), "'x' is given as admin and as admin"),
        (Deployment(subsystems=("VDSM",)), "--subsystem 'VDSM': not a valid name"),
        (Deployment(front_doors=(" door",)), "--front-door ' door': not a valid name"),
    ],
)
def test_inconsistent_identities_are_refused(deployment: Deployment, message: str) -> None:
    with pytest.raises(SetupError, match=re.escape(message)):
        definitions(deployment)


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "/"),
        ("amqp://127.0.0.1:5672/", "/"),
        ("amqp://127.0.0.1", "/"),
        ("amqps://h:5671/bus", "bus"),
        ("amqp://h/my%2Fvh;amqp://h2/my%2Fvh", "my/vh"),
    ],
)
def test_the_vhost_defaults_to_the_broker_urls(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost


def test_the_command_prints_the_document_and_the_passwords_apart(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["broker-setup", "--vhost", "bus", "--subsystem", "vdsm", "--aggregator", "agg1", "--passwords"]
    )
    out, err = capsys.readouterr()
    assert status == 0
    document = json.loads(out)
    lines = dict(line.split(" ") for line in err.splitlines())
    assert sorted(lines) == ["agg1", "vdsm"]
    for user in document["users"]:
        raw = base64.b64decode(user["password_hash"])
        assert raw[4:] == hashlib.sha256(raw[:4] + lines[user["name"]].encode()).digest()
    assert all(password not in out for password in lines.values())


def test_the_command_refuses_one_identity_in_two_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["broker-setup", "--subsystem", "vdsm", "--reader", "vdsm"]) == 2  # a usage error
    out, err = capsys.readouterr()
    assert out == ""
    assert "'vdsm' is given as subsystem and as reader: one role per identity" in err


def test_with_event_log_queue_each_aggregator_reads_only_an_events_queue_of_its_own() -> None:
    document = definitions(
        Deployment(subsystems=("vdsm",), aggregators=("agg1", "agg2"), event_log="queue", test_subsystem="")
    )
    own = {name: names.events_queue(name) for name in ("agg1", "agg2")}
    queue = {"vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}
    assert document["queues"][:2] == [{"name": own["agg1"], **queue}, {"name": own["agg2"], **queue}]
    assert names.EVENT_LOG not in [q["name"] for q in document["queues"]]  # no stream at all
    assert [(b["source"], b["destination"], b["routing_key"]) for b in document["bindings"][:2]] == [
        (names.EVENTS_EXCHANGE, own["agg1"], "task.#"),
        (names.EVENTS_EXCHANGE, own["agg2"], "task.#"),
    ]
    for me, other in (("agg1", "agg2"), ("agg2", "agg1")):
        rights = grants(document, me)
        assert rabbit_allows(rights["read"], own[me])
        assert not rabbit_allows(rights["read"], own[other])
        assert not rabbit_allows(rights["read"], names.EVENT_LOG)
        assert not rabbit_allows(rights["configure"], own[me])  # checked, never declared
    assert not rabbit_allows(grants(document, "vdsm")["read"], own["agg1"])


def test_with_event_log_queue_an_aggregator_identity_must_be_a_valid_aggregator_name() -> None:
    definitions(Deployment(aggregators=("Agg One",)))  # the stream: any identity
    with pytest.raises(SetupError, match=re.escape("--aggregator 'Agg One': with event_log = \"queue\"")):
        definitions(Deployment(aggregators=("Agg One",), event_log="queue"))


def test_the_command_lays_out_the_event_log_as_the_settings_say(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUS_TASKS_EVENT_LOG", "queue")
    assert main(["broker-setup", "--vhost", "bus", "--aggregator", "agg1"]) == 0
    queues = [q["name"] for q in json.loads(capsys.readouterr().out)["queues"]]
    assert queues[0] == names.events_queue("agg1")
    assert names.EVENT_LOG not in queues
