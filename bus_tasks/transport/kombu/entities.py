"""The broker-neutral specs of :mod:`bus_tasks.transport.topology` as kombu entities."""

from __future__ import annotations

from functools import cache
from typing import Any

from kombu.entity import Exchange, Queue, binding

from bus_tasks import names
from bus_tasks.transport.topology import ExchangeSpec, QueueSpec

DEFAULT_EXCHANGE = Exchange("", type="direct")


@cache
def exchange(spec: ExchangeSpec) -> Exchange:
    """One unbound entity per exchange: shared by every connection (each binds a copy)."""
    return Exchange(spec.name, type=spec.kind, durable=True)


def queue(spec: QueueSpec) -> Queue:
    """The kombu queue of ``spec``: a stream for a log, a quorum queue when replicated."""
    arguments: dict[str, Any] = {}
    if spec.log:
        arguments = {"x-queue-type": "stream", "x-max-age": spec.log_max_age}
        if spec.log_max_bytes is not None:
            arguments["x-max-length-bytes"] = spec.log_max_bytes
    elif spec.replicated:
        arguments = {"x-queue-type": "quorum"}
    flags: dict[str, Any] = {"durable": spec.durable}
    if spec.private:
        flags["exclusive"] = True
    if spec.temporary:
        flags["auto_delete"] = True
    if arguments:
        flags["queue_arguments"] = arguments
    if not spec.bindings:  # addressed by name, through the default exchange
        return Queue(spec.name, DEFAULT_EXCHANGE, routing_key=spec.name, **flags)
    if len(spec.bindings) == 1:
        [only] = spec.bindings
        return Queue(spec.name, exchange(only.exchange), routing_key=only.pattern, **flags)
    bindings = [binding(exchange(b.exchange), routing_key=b.pattern) for b in spec.bindings]
    return Queue(spec.name, bindings=bindings, **flags)


def exchanges_of(spec: QueueSpec) -> list[Exchange]:
    """The exchanges ``spec`` is bound to, each once, in order."""
    return [exchange(e) for e in dict.fromkeys(b.exchange for b in spec.bindings)]


def claim_queue(name: str) -> Queue:
    """On RabbitMQ, the lock of an exclusive consumer: a queue only its connection may declare."""
    lock = f"{names.CLAIM_PREFIX}{name}"
    return Queue(lock, DEFAULT_EXCHANGE, routing_key=lock, durable=False, exclusive=True, auto_delete=True)
