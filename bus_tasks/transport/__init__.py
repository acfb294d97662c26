"""The only room that imports kombu. The rest of bus_tasks speaks :class:`Bus` and queue names.

- :mod:`.bus`: the ``Bus`` protocol, ``Delivery``, ``Handler`` (no kombu)
- :mod:`.link`: connect, recover with back-off, deadlines and stops
- :mod:`.consumers`: consumers and the serial inbox
- :mod:`.outbox`: the publisher-confirm state machine (pure)
- :mod:`.topology`: exchanges and queues as kombu entities
- :mod:`.admin`: queue depths, consumer counts, gets, deletes
- :mod:`.connection`: ``BusConnection``, the facade over them
"""

from bus_tasks.errors import ShutdownRequested
from bus_tasks.transport.kombu.admin import reset_memory_transport
from bus_tasks.transport.bus import Bus, Delivery, Handler, QueueInUse
from bus_tasks.transport.kombu.connection import BusConnection
from bus_tasks.transport.kombu.consumers import ReentrantDrain
from bus_tasks.transport.topology import TopologyOptions

__all__ = [
    "Bus",
    "BusConnection",
    "Delivery",
    "Handler",
    "QueueInUse",
    "ReentrantDrain",
    "ShutdownRequested",
    "TopologyOptions",
    "reset_memory_transport",
]
