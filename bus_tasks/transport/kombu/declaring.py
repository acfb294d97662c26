"""What one connection declared, as kombu entities: declared again after every reconnect."""

from __future__ import annotations

import logging
from functools import partial
from typing import Protocol

from amqp.exceptions import NotFound, PreconditionFailed
from kombu.entity import Exchange, Queue

from bus_tasks.errors import TopologyMismatch, TopologyMissing
from bus_tasks.transport.kombu import admin, entities
from bus_tasks.transport.kombu.link import Link
from bus_tasks.transport.kombu.readiness import HOME_NODE_DOWN, not_ready, when_ready
from bus_tasks.transport.topology import ExchangeSpec, Spec, TopologyOptions, well_known

log = logging.getLogger("bus_tasks.transport")


class _Connecting(Protocol):
    def connect(self) -> None: ...


class Declarations:
    """The exchanges and queues of one connection (a :class:`~.link.Link`), by their specs."""

    def __init__(self, link: Link, owner: _Connecting, options: TopologyOptions) -> None:
        self._link = link  # read at each use: a reconnect replaces its connection, not the link
        self._owner = owner
        self._options = options
        self._declared: list[Queue | Exchange] = []
        self._queues: dict[str, Queue] = {}  # name -> entity, for queues declared here
        self._adoptable: set[str] = set()  # queues others declare too (a subsystem's control queue)

    def declare(self, *specs: Spec) -> None:
        """Declare exchanges and queues (a queue with its bindings' exchanges). A queue marked
        ``adopt`` that exists on RabbitMQ is used as it is: nothing is declared.

        Raises:
            TopologyMismatch: when a queue exists with other arguments (RabbitMQ keeps them).
        """
        for spec in specs:
            if isinstance(spec, ExchangeSpec):
                self._declare(entities.exchange(spec))
                continue
            entity = entities.queue(spec)
            if spec.adopt:
                self._adoptable.add(spec.name)
            if spec.adopt and self._link.is_amqp:
                self._owner.connect()
                if admin.queue_exists(self._link.new_channel(), spec.name):
                    self._queues[spec.name] = entity  # durable: nothing to declare again later
                    if not self._options.predeclared:
                        self._bind(entity, entities.exchanges_of(spec))
                    continue
            self._declare(*entities.exchanges_of(spec), entity)

    def _declare(self, *declared: Queue | Exchange) -> None:
        self._owner.connect()
        channel = self._link.channel
        for entity in declared:
            # bind() makes a bound copy: the shared entities stay unbound.
            try:
                when_ready(
                    self._link,
                    f"{type(entity).__name__.lower()} {entity.name}",
                    partial(self._declare_one, entity.bind(channel)),
                )
            except PreconditionFailed as exc:
                raise TopologyMismatch(str(entity.name), exc.reply_text or str(exc)) from exc
            except NotFound as exc:
                if not self._left_to_its_node(entity, exc):
                    raise
            if entity not in self._declared:
                self._declared.append(entity)
            if isinstance(entity, Queue):
                self._queues[entity.name] = entity

    def _bind(self, entity: Queue, exchanges: list[Exchange]) -> None:
        """Bind a queue that exists as ``entity`` says (idempotent): its declarer may not have bound
        it yet (a quorum queue is declared slowly), and a command routed before would be lost."""
        self._declare(*exchanges)
        bound = entity.bind(self._link.channel)
        for item in bound.bindings or ():
            when_ready(
                self._link, f"queue {entity.name}", partial(bound.bind_to, item.exchange, item.routing_key)
            )
        if bound.exchange is not None and bound.exchange.name:
            when_ready(self._link, f"queue {entity.name}", bound.queue_bind)

    def entity(self, queue: str) -> Queue:
        """The kombu queue of this name: as declared here, or as :mod:`bus_tasks.names` spells it."""
        entity = self._queues.get(queue)
        return entity if entity is not None else entities.queue(well_known(queue, self._options))

    def _left_to_its_node(self, entity: Queue | Exchange, exc: NotFound) -> bool:
        """True (and said) when ``entity`` is a queue others declare too (a subsystem's control
        queue, which this connection only publishes to) that exists on a node that is down: it
        comes back with its node, and waiting for it would stop everything else this
        connection does."""
        if entity.name not in self._adoptable or HOME_NODE_DOWN not in str(exc.reply_text or ""):
            return False
        log.warning("queue %s not declared on this node: %s", entity.name, not_ready(exc))
        return True

    def restore(self) -> None:
        """Declare everything again on the link's new connection.

        A queue others declare too whose node is down is left to come back with it.
        """
        channel = self._link.channel
        for entity in self._declared:
            try:
                self._declare_one(entity.bind(channel))
            except NotFound as exc:
                if not self._left_to_its_node(entity, exc):
                    raise

    def _declare_one(self, bound: Queue | Exchange) -> None:
        if self._link.is_amqp and self._options.predeclared:
            declare_on_predeclared(bound)
        else:
            bound.declare()


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
    except NotFound as exc:
        if not_ready(exc) is not None:  # it exists, on a node that is down: waited for
            raise
        raise TopologyMissing(f"{type(bound).__name__.lower()} {bound.name}") from None
