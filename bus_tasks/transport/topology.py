"""The exchanges and queues of bus_tasks as kombu entities, built from :mod:`bus_tasks.names`."""

from __future__ import annotations

import uuid

from kombu.entity import Exchange, Queue, binding

from bus_tasks import names

EVENTS_EXCHANGE = Exchange(names.EVENTS_EXCHANGE, type="topic", durable=True)
CONTROL_EXCHANGE = Exchange(names.CONTROL_EXCHANGE, type="direct", durable=True)
DEFAULT_EXCHANGE = Exchange("", type="direct")
EXCHANGES = {e.name: e for e in (EVENTS_EXCHANGE, CONTROL_EXCHANGE)}


def events_queue() -> Queue:
    return Queue(names.EVENTS_QUEUE, EVENTS_EXCHANGE, routing_key=names.EVENTS_BINDING, durable=True)


def rpc_queue() -> Queue:
    return Queue(names.RPC_QUEUE, DEFAULT_EXCHANGE, routing_key=names.RPC_QUEUE, durable=True)


def dead_queue() -> Queue:
    return Queue(names.DEAD_QUEUE, DEFAULT_EXCHANGE, routing_key=names.DEAD_QUEUE, durable=True)


def control_queue(subsystem: str) -> Queue:
    """A subsystem's durable command queue: its own commands, and those addressed to all."""
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


_WELL_KNOWN = {
    names.EVENTS_QUEUE: events_queue,
    names.RPC_QUEUE: rpc_queue,
    names.DEAD_QUEUE: dead_queue,
}
_CONTROL_PREFIX = names.control_queue("")


def well_known(queue: str) -> Queue:
    """The entity of a queue that :mod:`bus_tasks.names` spells (events, RPC, dead, control).

    Raises:
        KeyError: for any other name (reply queues are known by their connection only).
    """
    factory = _WELL_KNOWN.get(queue)
    if factory is not None:
        return factory()
    if queue.startswith(_CONTROL_PREFIX) and not queue.startswith(names.CONTROL_REPLY_PREFIX):
        return control_queue(queue[len(_CONTROL_PREFIX) :])
    raise KeyError(f"{queue!r} is not a queue of bus_tasks.names")
