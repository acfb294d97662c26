"""The exchanges and queues of bus_tasks as kombu entities, built from :mod:`bus_tasks.names`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from amqp.exceptions import NotFound
from kombu.entity import Exchange, Queue, binding

from bus_tasks import names
from bus_tasks.errors import TopologyMissing

EVENTS_EXCHANGE = Exchange(names.EVENTS_EXCHANGE, type="topic", durable=True)
CONTROL_EXCHANGE = Exchange(names.CONTROL_EXCHANGE, type="direct", durable=True)
CHANGES_EXCHANGE = Exchange(names.CHANGES_EXCHANGE, type="topic", durable=True)
DEFAULT_EXCHANGE = Exchange("", type="direct")
EXCHANGES = {e.name: e for e in (EVENTS_EXCHANGE, CONTROL_EXCHANGE, CHANGES_EXCHANGE)}

EventLog = Literal["stream", "queue"]
QueueType = Literal["classic", "quorum"]


@dataclass(frozen=True, slots=True)
class TopologyOptions:
    """How a deployment lays out its queues; every process of it must agree.

    - ``event_log``: on RabbitMQ, ``stream`` (every aggregator reads one log from its own
      offset) or ``queue`` (one queue per aggregator); elsewhere always ``queue``.
    - ``log_max_age``, ``log_max_bytes``: the stream's retention, when this process creates it
      (an existing stream keeps its own; change it with a RabbitMQ policy).
    - ``queue_type``: ``classic`` or ``quorum`` (replicated) for the RPC queue (control queues
      stay classic: see :func:`control_queue`).
    - ``replica``: this aggregator's name; off the stream, its events queue is named after it.
    - ``predeclared``: on RabbitMQ, the shared exchanges and queues exist (``bus-tasks
      broker-setup``): they are checked, never declared, so no configure permission is needed.
    """

    event_log: EventLog = "stream"
    log_max_age: str = "7D"
    log_max_bytes: int | None = None
    queue_type: QueueType = "classic"
    replica: str = ""
    predeclared: bool = False


DEFAULT_OPTIONS = TopologyOptions()


def _typed(queue_type: QueueType) -> dict[str, Any]:
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


def event_log(options: TopologyOptions = DEFAULT_OPTIONS) -> Queue:
    """The stream every aggregator reads (RabbitMQ), bound to every event."""
    arguments: dict[str, Any] = {"x-queue-type": "stream", "x-max-age": options.log_max_age}
    if options.log_max_bytes is not None:
        arguments["x-max-length-bytes"] = options.log_max_bytes
    return Queue(
        names.EVENT_LOG,
        EVENTS_EXCHANGE,
        routing_key=names.EVENTS_BINDING,
        durable=True,
        queue_arguments=arguments,
    )


def events_queue(replica: str = "") -> Queue:
    return Queue(names.events_queue(replica), EVENTS_EXCHANGE, routing_key=names.EVENTS_BINDING, durable=True)


def rpc_queue(queue_type: QueueType = "classic") -> Queue:
    return Queue(
        names.RPC_QUEUE,
        DEFAULT_EXCHANGE,
        routing_key=names.RPC_QUEUE,
        durable=True,
        queue_arguments=_typed(queue_type),
    )


def dead_queue() -> Queue:
    return Queue(names.DEAD_QUEUE, DEFAULT_EXCHANGE, routing_key=names.DEAD_QUEUE, durable=True)


def control_queue(subsystem: str) -> Queue:
    """A subsystem's durable command queue: its own commands, and those addressed to all.

    Always a classic queue: its subsystem consumes it exclusively (one owner per name), which
    quorum queues do not enforce, and commands sent to it before it listened were not always
    delivered from a quorum queue in our trials on RabbitMQ 3.10.
    """
    return Queue(
        names.control_queue(subsystem),
        durable=True,
        bindings=[
            binding(CONTROL_EXCHANGE, routing_key=subsystem),
            binding(CONTROL_EXCHANGE, routing_key=names.CONTROL_BROADCAST),
        ],
    )


def reply_queue(prefix: str) -> Queue:
    """A private, self-deleting queue for the replies of one client."""
    name = f"{prefix}{uuid.uuid4().hex}"
    return Queue(name, DEFAULT_EXCHANGE, routing_key=name, durable=False, exclusive=True, auto_delete=True)


def replica_rpc_queue(prefix: str) -> Queue:
    """An aggregator's own request queue: gone with its consumer, and open to other
    connections' passive checks (an exclusive queue would refuse them)."""
    name = f"{prefix}{uuid.uuid4().hex}"
    return Queue(name, DEFAULT_EXCHANGE, routing_key=name, durable=False, auto_delete=True)


def presence_queue() -> Queue:
    """An aggregator's private queue of heartbeats (subsystems' and aggregators'), not kept."""
    return Queue(
        f"{names.PRESENCE_QUEUE_PREFIX}{uuid.uuid4().hex}",
        durable=False,
        exclusive=True,
        auto_delete=True,
        bindings=[
            binding(EVENTS_EXCHANGE, routing_key=names.SUBSYSTEM_BEATS),
            binding(EVENTS_EXCHANGE, routing_key=names.AGGREGATOR_BEATS),
        ],
    )


def watch_queue() -> Queue:
    """A watcher's private queue of the change feeds of every aggregator, not kept."""
    return Queue(
        f"{names.WATCH_QUEUE_PREFIX}{uuid.uuid4().hex}",
        durable=False,
        exclusive=True,
        auto_delete=True,
        bindings=[binding(CHANGES_EXCHANGE, routing_key=names.CHANGES_BINDING)],
    )


def claim_queue(queue: str) -> Queue:
    """On RabbitMQ, the lock of an exclusive consumer: a queue only its connection may declare."""
    name = f"{names.CLAIM_PREFIX}{queue}"
    return Queue(name, DEFAULT_EXCHANGE, routing_key=name, durable=False, exclusive=True, auto_delete=True)


_CONTROL_PREFIX = names.control_queue("")


def well_known(queue: str, options: TopologyOptions = DEFAULT_OPTIONS) -> Queue:
    """The entity of a queue that :mod:`bus_tasks.names` spells (log, events, RPC, dead, control).

    Raises:
        KeyError: for any other name (reply queues are known by their connection only).
    """
    if queue == names.EVENT_LOG:
        return event_log(options)
    if queue == names.RPC_QUEUE:
        return rpc_queue(options.queue_type)
    if queue == names.DEAD_QUEUE:
        return dead_queue()
    if queue == names.EVENTS_QUEUE or queue.startswith(names.EVENTS_QUEUE + "."):
        return events_queue(queue[len(names.EVENTS_QUEUE) + 1 :])
    if queue.startswith(_CONTROL_PREFIX) and not queue.startswith(names.CONTROL_REPLY_PREFIX):
        return control_queue(queue[len(_CONTROL_PREFIX) :])
    raise KeyError(f"{queue!r} is not a queue of bus_tasks.names")


def declare_on_predeclared(bound: Queue | Exchange) -> None:
    """Declare a bound entity where the shared topology exists beforehand (``predeclared``):
    the shared exchanges and queues are only checked (passive: no configure permission), a
    private queue is declared and bound to them without declaring them.

    Raises:
        TopologyMissing: when a shared exchange or queue does not exist.
    """
    try:
        if isinstance(bound, Exchange):
            bound.declare(passive=True)
        elif not (bound.exclusive or bound.auto_delete):  # a shared queue
            bound.queue_declare(passive=True)
        else:
            bound.queue_declare()
            if bound.exchange is not None and bound.exchange.name:
                bound.queue_bind()
            for item in bound.bindings or ():
                bound.bind_to(item.exchange, item.routing_key, item.arguments)
    except NotFound:
        raise TopologyMissing(f"{type(bound).__name__.lower()} {bound.name}") from None
