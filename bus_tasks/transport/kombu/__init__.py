"""The kombu transport: RabbitMQ (``amqp://``), Redis (``redis://``) and ``memory://``.

Its entry is :func:`open_bus` (called by :func:`bus_tasks.transport.open`); its admin is
:class:`~.admin.KombuAdmin`, reached through :func:`bus_tasks.transport.admin`.
"""

from __future__ import annotations

import threading

from bus_tasks.transport.kombu.admin import reset_memory_transport
from bus_tasks.transport.kombu.connection import BusConnection
from bus_tasks.transport.opening import BusOptions

__all__ = ["BusConnection", "open_bus", "reset_memory_transport"]


def open_bus(url: str, options: BusOptions, stop: threading.Event | None) -> BusConnection:
    """A :class:`BusConnection` to ``url`` (not connected yet)."""
    return BusConnection(url, options, stop)
