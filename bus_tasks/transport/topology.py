"""The exchanges and queues of bus_tasks, broker-neutral, built from :mod:`bus_tasks.names`.

A transport declares what these specs describe in its own terms (kombu: exchanges, queues and
bindings; a JetStream transport: streams, subjects and consumers). :class:`Topology` is the
bus_tasks layout built on one operation of the bus, :meth:`Declarer.declare`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

from bus_tasks import names

EventLog = Literal["stream", "queue"]
QueueType = Literal["classic", "quorum"]
ExchangeKind = Literal["topic", "direct"]


@dataclass(frozen=True, slots=True)
class TopologyOptions:
    """How a deployment lays out its queues; every process of it must agree.

    - ``event_log``: where the bus can replay (RabbitMQ), ``stream`` (every aggregator reads
      one log from its own position) or ``queue`` (one queue per aggregator); elsewhere always
      ``queue``.
    - ``log_max_age``, ``log_max_bytes``: the log's retention, when this process creates it
      (an existing log keeps its own; change it with a RabbitMQ policy).
    - ``queue_type``: ``classic`` or ``quorum`` (replicated) for the RPC, dead-letter and
      control queues (an existing control queue is used as it is: see :func:`control_queue`).
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


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """Where messages are published to, routed by their routing key (``topic``: by pattern)."""

    name: str
    kind: ExchangeKind


@dataclass(frozen=True, slots=True)
class Binding:
    """A queue receives what ``exchange`` routes with a key that ``pattern`` matches."""

    exchange: ExchangeSpec
    pattern: str


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue of bus_tasks.

    - ``bindings``: none means it is addressed by its name alone (the default exchange).
    - ``private``: only the connection that declared it may use it; ``temporary``: it goes with
      its last consumer; neither ``durable``: lost with the broker.
    - ``log``: a replayable log that each reader reads from a position of its own (a stream),
      kept for ``log_max_age`` / ``log_max_bytes``.
    - ``replicated``: kept on several broker nodes (a quorum queue).
    - ``adopt``: others may declare it first with arguments of their own: used as it is when it
      exists (a bus that can tell), declared as described otherwise.
    """

    name: str
    bindings: tuple[Binding, ...] = ()
    durable: bool = True
    private: bool = False
    temporary: bool = False
    log: bool = False
    log_max_age: str = ""
    log_max_bytes: int | None = None
    replicated: bool = False
    adopt: bool = False


Spec = ExchangeSpec | QueueSpec

EVENTS_EXCHANGE = ExchangeSpec(names.EVENTS_EXCHANGE, "topic")
CONTROL_EXCHANGE = ExchangeSpec(names.CONTROL_EXCHANGE, "direct")
CHANGES_EXCHANGE = ExchangeSpec(names.CHANGES_EXCHANGE, "topic")
EXCHANGES = {e.name: e for e in (EVENTS_EXCHANGE, CONTROL_EXCHANGE, CHANGES_EXCHANGE)}


def event_log(options: TopologyOptions = DEFAULT_OPTIONS) -> QueueSpec:
    """The log every aggregator reads (RabbitMQ: a stream), bound to every event."""
    return QueueSpec(
        names.EVENT_LOG,
        (Binding(EVENTS_EXCHANGE, names.EVENTS_BINDING),),
        log=True,
        log_max_age=options.log_max_age,
        log_max_bytes=options.log_max_bytes,
        adopt=True,
    )


def events_queue(replica: str = "") -> QueueSpec:
    return QueueSpec(names.events_queue(replica), (Binding(EVENTS_EXCHANGE, names.EVENTS_BINDING),))


def rpc_queue(queue_type: QueueType = "classic") -> QueueSpec:
    return QueueSpec(names.RPC_QUEUE, replicated=queue_type == "quorum")


def dead_queue(queue_type: QueueType = "classic") -> QueueSpec:
    """Poison messages, kept for a person to look at; replicated with ``queue_type = "quorum"``:
    a durable classic queue whose node is down cannot be declared again on another (3.10)."""
    return QueueSpec(names.DEAD_QUEUE, replicated=queue_type == "quorum")


def control_queue(subsystem: str, queue_type: QueueType = "classic") -> QueueSpec:
    """A subsystem's durable command queue: its own commands, and those addressed to all.

    Replicated with ``queue_type = "quorum"`` (SPEC 17): a durable classic queue whose node is
    down cannot be declared or consumed elsewhere (RabbitMQ 3.10), so its subsystem, and the
    aggregators that forward to it, would wait for that node. One owner per name is kept by
    the claim (a lock queue, see ``transport/kombu/exclusive.py``), whatever the queue's type.
    """
    return QueueSpec(
        names.control_queue(subsystem),
        (Binding(CONTROL_EXCHANGE, subsystem), Binding(CONTROL_EXCHANGE, names.CONTROL_BROADCAST)),
        replicated=queue_type == "quorum",
        adopt=True,
    )


def reply_queue(prefix: str) -> QueueSpec:
    """A private, self-deleting queue for the replies of one client."""
    return QueueSpec(f"{prefix}{uuid.uuid4().hex}", durable=False, private=True, temporary=True)


def replica_rpc_queue(prefix: str) -> QueueSpec:
    """An aggregator's own request queue: gone with its consumer, and open to other
    connections' passive checks (a private queue would refuse them)."""
    return QueueSpec(f"{prefix}{uuid.uuid4().hex}", durable=False, temporary=True)


def presence_queue() -> QueueSpec:
    """An aggregator's private queue of heartbeats (subsystems' and aggregators'), not kept."""
    return QueueSpec(
        f"{names.PRESENCE_QUEUE_PREFIX}{uuid.uuid4().hex}",
        (Binding(EVENTS_EXCHANGE, names.SUBSYSTEM_BEATS), Binding(EVENTS_EXCHANGE, names.AGGREGATOR_BEATS)),
        durable=False,
        private=True,
        temporary=True,
    )


def watch_queue() -> QueueSpec:
    """A watcher's private queue of the change feeds of every aggregator, not kept."""
    return QueueSpec(
        f"{names.WATCH_QUEUE_PREFIX}{uuid.uuid4().hex}",
        (Binding(CHANGES_EXCHANGE, names.CHANGES_BINDING),),
        durable=False,
        private=True,
        temporary=True,
    )


_CONTROL_PREFIX = names.control_queue("")


def well_known(queue: str, options: TopologyOptions = DEFAULT_OPTIONS) -> QueueSpec:
    """The spec of a queue that :mod:`bus_tasks.names` spells (log, events, RPC, dead, control).

    Raises:
        KeyError: for any other name (reply queues are known by their connection only).
    """
    if queue == names.EVENT_LOG:
        return event_log(options)
    if queue == names.RPC_QUEUE:
        return rpc_queue(options.queue_type)
    if queue == names.DEAD_QUEUE:
        return dead_queue(options.queue_type)
    if queue == names.EVENTS_QUEUE or queue.startswith(names.EVENTS_QUEUE + "."):
        return events_queue(queue[len(names.EVENTS_QUEUE) + 1 :])
    if queue.startswith(_CONTROL_PREFIX) and not queue.startswith(names.CONTROL_REPLY_PREFIX):
        return control_queue(queue[len(_CONTROL_PREFIX) :], options.queue_type)
    raise KeyError(f"{queue!r} is not a queue of bus_tasks.names")


class Declarer(Protocol):
    """What the topology needs of a bus."""

    @property
    def replays(self) -> bool:
        """True when the bus keeps logs that readers replay from a position (RabbitMQ streams)."""
        ...

    def declare(self, *specs: Spec) -> None:
        """Declare exchanges and queues, again after every reconnect.

        A queue comes with its bindings and the exchanges they name. One marked ``adopt`` that
        exists already is used as it is (nothing declared: its declarer may lack the rights).

        Raises:
            TopologyMismatch: when a queue exists with other arguments (RabbitMQ keeps them).
        """
        ...


class Topology:
    """The exchanges and queues of bus_tasks on one bus, laid out as ``options`` say."""

    def __init__(self, bus: Declarer, options: TopologyOptions = DEFAULT_OPTIONS) -> None:
        self._bus = bus
        self.options = options

    @property
    def uses_stream(self) -> bool:
        """Events are read from the log (a bus that replays, with ``event_log = "stream"``)."""
        return self._bus.replays and self.options.event_log == "stream"

    @property
    def events_source(self) -> str:
        """The queue an aggregator reads events from: the log, or its own events queue."""
        return names.EVENT_LOG if self.uses_stream else names.events_queue(self.options.replica)

    def declare_exchanges(self) -> None:
        self._bus.declare(EVENTS_EXCHANGE, CONTROL_EXCHANGE, CHANGES_EXCHANGE)

    def declare_events(self) -> None:
        """Where events are kept until an aggregator reads them: the log, or the events queue
        of an aggregator of this configuration's name (what a publisher declares)."""
        options = self.options
        self._bus.declare(event_log(options) if self.uses_stream else events_queue(options.replica))

    def declare_topology(self) -> None:
        """The aggregator's side of the bus: events in, RPC in, control out, dead letters.

        Raises:
            TopologyMismatch: when the RPC queue exists with another ``queue_type``.
        """
        self.declare_exchanges()
        self.declare_events()
        self._bus.declare(rpc_queue(self.options.queue_type), dead_queue(self.options.queue_type))

    def declare_queue(self, queue: str) -> None:
        """Declare a queue of :mod:`bus_tasks.names` (events, RPC, dead letters, a control queue)."""
        self._declare(well_known(queue, self.options))

    def declare_control_queue(self, subsystem: str) -> str:
        """A subsystem's durable command queue (kept while the subsystem is offline); its name.

        One that exists is used as it is (whoever declared it first, a subsystem or an
        aggregator that forwards to it).
        """
        return self._declare(control_queue(subsystem, self.options.queue_type))

    def declare_replica_queue(self, prefix: str) -> str:
        """A new queue of this connection's own, deleted when its consumer goes; its name."""
        return self._declare(replica_rpc_queue(prefix))

    def declare_presence_queue(self) -> str:
        """A new private queue of every heartbeat (subsystems' and aggregators'); its name."""
        self.declare_exchanges()
        return self._declare(presence_queue())

    def declare_watch_queue(self) -> str:
        """A new private queue of every aggregator's change feed; its name."""
        return self._declare(watch_queue())

    def declare_reply_queue(self, prefix: str) -> str:
        """A new private, self-deleting queue for replies; returns its name."""
        return self._declare(reply_queue(prefix))

    def _declare(self, queue: QueueSpec) -> str:
        self._bus.declare(queue)
        return queue.name
