"""The transport seam: the rest of bus_tasks speaks :class:`Bus`, queue names and topology specs.

Three roles, and one way in:

- :mod:`.bus`: the small broker-neutral ``Bus`` protocol (declare, publish and flush, consume,
  drain, settle, recover, close, a deadline), ``Delivery``, ``Handler``, optional capabilities
- :mod:`.topology`: the bus_tasks exchanges and queues as neutral specs, and ``Topology``
  (``bus.topology``), the layout built on :meth:`Bus.declare`
- :mod:`.admin`: ``BrokerAdmin`` for tools and tests (sizes, gets, deletes, consumer counts)
- :mod:`.opening`: :func:`open` picks the implementation from the URL (the only place that
  builds one), :func:`admin` finds a bus's admin
- :mod:`.kombu`: the implementation on kombu (RabbitMQ, Redis, memory://), the only room that
  imports a broker library; :mod:`.outbox` and :mod:`.backoff` are its pure state machines

Importing this package loads no broker library: a transport module is imported by :func:`open`.
"""

from __future__ import annotations

from bus_tasks.errors import QueueInUse, ShutdownRequested
from bus_tasks.transport.admin import BrokerAdmin
from bus_tasks.transport.bus import Bus, Delivery, Handler, Position, ReentrantDrain, Wakeable, wakeup_handle
from bus_tasks.transport.opening import BusOptions, admin, open
from bus_tasks.transport.topology import Topology, TopologyOptions

__all__ = [
    "BrokerAdmin",
    "Bus",
    "BusOptions",
    "Delivery",
    "Handler",
    "Position",
    "QueueInUse",
    "ReentrantDrain",
    "ShutdownRequested",
    "Topology",
    "TopologyOptions",
    "Wakeable",
    "admin",
    "open",
    "reset_memory_transport",
    "wakeup_handle",
]


def reset_memory_transport() -> None:
    """Forget every queue, exchange, binding and exclusive claim of kombu's ``memory://`` broker.

    kombu keeps that broker's state in class attributes; tests call this between runs.
    """
    from bus_tasks.transport.kombu.admin import reset_memory_transport as reset  # noqa: PLC0415 - loads kombu

    reset()
