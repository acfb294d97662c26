"""``bus-tasks broker-setup``: a RabbitMQ definitions document for one vhost (SPEC 15).

The topology declared beforehand (exchanges, the event log (the stream, or with
``event_log = "queue"`` an events queue per aggregator), the RPC, dead-letter and control queues,
their bindings) and one user per identity with the least it needs, for
``rabbitmqctl import_definitions FILE``:

- a subsystem publishes only its own routing keys (topic permissions on ``bus_tasks.events``),
  reads only its own control queue, and configures nothing but the exclusive queue that claims
  its name;
- an aggregator reads the event log (or its own events queue) and the RPC queue (nobody else
  does), publishes clears, test tasks, its beats and its change feed, and makes only its own
  private queues;
- readers, operators, admins and front doors call over RPC and watch: their own reply and watch
  queues; admins also publish test tasks (``bus-tasks inject``) and read the dead letters.

Nobody may delete the shared exchanges or queues (that needs configure on them): only RabbitMQ's
administrator can. Pure: the document is data; printing it is the CLI's business.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from kombu.entity import Exchange, Queue

from bus_tasks import names
from bus_tasks.core.model import ANNOUNCED, SUBSYSTEM_PATTERN, EventName
from bus_tasks.identity import IDENTITY_PATTERN
from bus_tasks.transport import topology
from bus_tasks.transport.kombu import entities

HASHING = "rabbit_password_hashing_sha256"
ROLES = ("subsystem", "aggregator", "reader", "operator", "admin", "front_door")
DEFAULT_EXCHANGE = "amq.default"  # how RabbitMQ names the default exchange in permissions

_EVENTS = (*get_args(EventName), ANNOUNCED)
_SUBSYSTEM_RE = re.compile(SUBSYSTEM_PATTERN)
_IDENTITY_RE = re.compile(IDENTITY_PATTERN)
# The private queues of a process: a uuid's hex after the prefix (see transport.topology).
_PRIVATE = r"[0-9a-f]{32}"


class SetupError(ValueError):
    """Raised when the roles asked for cannot make one consistent document."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """Who is on the bus and how its queues are laid out (as ``Settings`` tell the processes)."""

    subsystems: tuple[str, ...] = ()
    aggregators: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    front_doors: tuple[str, ...] = ()
    vhost: str = "/"
    queue_type: topology.QueueType = "classic"
    event_log_max_age: str = "7D"
    test_subsystem: str = "test"
    # "queue": no stream; each aggregator reads an events queue of its own, named after it (it
    # runs with aggregator_name = its identity).
    event_log: topology.EventLog = "stream"

    def roles(self) -> dict[str, str]:
        """identity -> its role; one role per identity.

        Raises:
            SetupError: for a name given twice, or one RabbitMQ or bus_tasks would not take.
        """
        found: dict[str, str] = {}
        for role in ROLES:
            for name in getattr(self, f"{role}s"):
                pattern = _SUBSYSTEM_RE if role == "subsystem" else _IDENTITY_RE
                if not pattern.match(name):
                    raise SetupError(
                        f"--{role.replace('_', '-')} {name!r}: not a valid name ({pattern.pattern})"
                    )
                if name in found:
                    raise SetupError(
                        f"{name!r} is given as {found[name]} and as {role}: one role per identity"
                    )
                if role == "aggregator" and self.event_log == "queue" and not _SUBSYSTEM_RE.match(name):
                    raise SetupError(
                        f'--aggregator {name!r}: with event_log = "queue" it reads the events queue'
                        f" of its aggregator_name, which must be its identity: not a valid name"
                        f" ({_SUBSYSTEM_RE.pattern})"
                    )
                found[name] = role
        return found

    def events_sources(self) -> list[topology.QueueSpec]:
        """Where the aggregators read events: the stream, or each one's own events queue."""
        if self.event_log == "stream":
            options = topology.TopologyOptions(event_log="stream", log_max_age=self.event_log_max_age)
            return [topology.event_log(options)]
        return [topology.events_queue(name) for name in self.aggregators]


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's stored form of a password (rabbit_password_hashing_sha256):
    base64(salt + sha256(salt + password)), with a random 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def new_passwords(identities: Iterable[str]) -> dict[str, str]:
    """A fresh random password for each identity."""
    return {name: secrets.token_urlsafe(24) for name in identities}


def definitions(deployment: Deployment, passwords: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The definitions document; users log in by certificate unless ``passwords`` (name -> password).

    Raises:
        SetupError: see :meth:`Deployment.roles`.
    """
    roles = deployment.roles()
    vhost = deployment.vhost
    controlled = list(dict.fromkeys([*deployment.subsystems, *filter(None, [deployment.test_subsystem])]))
    queues = [
        entities.queue(spec)  # RabbitMQ's view of the neutral specs
        for spec in (
            *deployment.events_sources(),
            topology.rpc_queue(deployment.queue_type),
            topology.dead_queue(deployment.queue_type),
            *(topology.control_queue(name, deployment.queue_type) for name in controlled),
        )
    ]
    permissions = []
    topic_permissions = []
    for name, role in roles.items():
        grant = _GRANTS[role](name, deployment)
        permissions.append({"user": name, "vhost": vhost, **grant.permissions})
        topic_permissions += [
            {"user": name, "vhost": vhost, "exchange": exchange, "write": write, "read": read}
            for exchange, (write, read) in grant.topics.items()
        ]
    return {
        "users": [_user(name, passwords) for name in roles],
        "vhosts": [{"name": vhost}],
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "exchanges": [_exchange(entities.exchange(e), vhost) for e in topology.EXCHANGES.values()],
        "queues": [_queue(q, vhost) for q in queues],
        "bindings": [b for q in queues for b in _bindings(q, vhost)],
    }


def _user(name: str, passwords: Mapping[str, str] | None) -> dict[str, Any]:
    # No password hash: the user can only log in by certificate (EXTERNAL).
    hashed = password_hash(passwords[name]) if passwords is not None else ""
    return {"name": name, "password_hash": hashed, "hashing_algorithm": HASHING, "tags": []}


def _exchange(exchange: Exchange, vhost: str) -> dict[str, Any]:
    return {
        "name": exchange.name,
        "vhost": vhost,
        "type": exchange.type,
        "durable": bool(exchange.durable),
        "auto_delete": bool(exchange.auto_delete),
        "internal": False,
        "arguments": {},
    }


def _queue(queue: Queue, vhost: str) -> dict[str, Any]:
    return {
        "name": queue.name,
        "vhost": vhost,
        "durable": bool(queue.durable),
        "auto_delete": bool(queue.auto_delete),
        "arguments": dict(getattr(queue, "queue_arguments", None) or {}),
    }


def _bindings(queue: Queue, vhost: str) -> list[dict[str, Any]]:
    # kombu keeps bindings in a set: sorted, the document is the same every time.
    pairs = sorted((b.exchange.name, b.routing_key) for b in queue.bindings or ())
    if queue.exchange is not None and queue.exchange.name:
        pairs.append((queue.exchange.name, queue.routing_key))
    return [
        {
            "source": source,
            "vhost": vhost,
            "destination": queue.name,
            "destination_type": "queue",
            "routing_key": key,
            "arguments": {},
        }
        for source, key in pairs
    ]


# -- who may do what: RabbitMQ's permissions are regexes over resource names (and, for topic
# permissions, over routing keys); "" grants nothing.


@dataclass(frozen=True, slots=True)
class _Grant:
    permissions: dict[str, str]  # configure, write, read
    topics: dict[str, tuple[str, str]]  # exchange -> (write, read) regexes over routing keys


def _any_of(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$" if patterns else ""


def _lit(name: str) -> str:
    return re.escape(name)


def _events_of(subsystem: str) -> str:
    return rf"task\.{_lit(subsystem)}\.({'|'.join(_EVENTS)})"


def _subsystem(name: str, deployment: Deployment) -> _Grant:
    control = names.control_queue(name)
    return _Grant(
        {
            # The exclusive queue that claims the name while it listens (transport.exclusive).
            "configure": _any_of(_lit(f"{names.CLAIM_PREFIX}{control}")),
            # Events and heartbeats; control replies go to the default exchange.
            "write": _any_of(_lit(names.EVENTS_EXCHANGE), _lit(DEFAULT_EXCHANGE)),
            "read": _any_of(_lit(control)),
        },
        {names.EVENTS_EXCHANGE: (_any_of(_events_of(name), _lit(names.heartbeat_routing_key(name))), "")},
    )


_AGGREGATOR_OWN = (
    names.PRESENCE_QUEUE_PREFIX,
    names.REPLICA_RPC_PREFIX,
    names.CONTROL_REPLY_PREFIX,
    names.WATCH_QUEUE_PREFIX,
    names.REPLY_QUEUE_PREFIX,
)
_CALLER_OWN = (names.REPLY_QUEUE_PREFIX, names.WATCH_QUEUE_PREFIX)


def _own(prefixes: Iterable[str]) -> list[str]:
    return [_lit(prefix) + _PRIVATE for prefix in prefixes]


def _aggregator(name: str, deployment: Deployment) -> _Grant:
    own = _own(_AGGREGATOR_OWN)
    test = deployment.test_subsystem
    # It binds its presence and watch queues to these (read on the exchange).
    sources = [_lit(names.EVENTS_EXCHANGE), _lit(names.CHANGES_EXCHANGE)]
    # Clears and expiry of any task, its beats, test tasks; commands; the change feed; replies.
    targets = [*sources, _lit(names.CONTROL_EXCHANGE), _lit(DEFAULT_EXCHANGE)]
    events = names.EVENT_LOG if deployment.event_log == "stream" else names.events_queue(name)
    shared = [
        _lit(events),  # the stream, or its own events queue
        _lit(names.RPC_QUEUE),
        *([_lit(names.control_queue(test))] if test else []),
    ]
    keys = [r"task\.[^.].*\.cleared", r"aggregator\..+\.beat", *([_events_of(test)] if test else [])]
    return _Grant(
        {
            "configure": _any_of(*own),
            "write": _any_of(*targets, *own),
            "read": _any_of(*sources, *shared, *own),
        },
        {
            names.EVENTS_EXCHANGE: (_any_of(*keys), ".*"),
            names.CHANGES_EXCHANGE: (_any_of(r"changes\..+"), ".*"),
        },
    )


def _caller(name: str, deployment: Deployment) -> _Grant:
    """A reader, operator or front door: calls over RPC (the default exchange), and watches."""
    own = _own(_CALLER_OWN)
    return _Grant(
        {
            "configure": _any_of(*own),
            "write": _any_of(_lit(DEFAULT_EXCHANGE), *own),
            "read": _any_of(_lit(names.CHANGES_EXCHANGE), *own),
        },
        {},
    )


def _admin(name: str, deployment: Deployment) -> _Grant:
    """A caller who also reads the dead letters and injects test tasks (``bus-tasks inject``)."""
    own = _own(_CALLER_OWN)
    test = deployment.test_subsystem
    events = [_lit(names.EVENTS_EXCHANGE)] if test else []
    return _Grant(
        {
            "configure": _any_of(*own),
            "write": _any_of(*events, _lit(DEFAULT_EXCHANGE), *own),
            "read": _any_of(_lit(names.CHANGES_EXCHANGE), _lit(names.DEAD_QUEUE), *own),
        },
        {names.EVENTS_EXCHANGE: (_any_of(_events_of(test)), "")} if test else {},
    )


_GRANTS: dict[str, Callable[[str, Deployment], _Grant]] = {
    "subsystem": _subsystem,
    "aggregator": _aggregator,
    "reader": _caller,
    "operator": _caller,
    "front_door": _caller,
    "admin": _admin,
}
