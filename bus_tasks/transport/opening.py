"""``open(url, options)``: the one place that builds a :class:`~bus_tasks.transport.bus.Bus`.

The URL's scheme picks the transport module from :data:`TRANSPORTS`; the module is imported
only then (so naming the protocol loads no broker library) and its ``open_bus(url, options,
stop)`` builds the bus. A new transport is one module and one line in that table.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import import_module
from typing import Protocol, cast

from bus_tasks.broker_login import NO_LOGIN, BrokerLogin
from bus_tasks.config import DEFAULT_CONNECT_TIMEOUT_S, redact_url
from bus_tasks.transport.admin import Administered, BrokerAdmin
from bus_tasks.transport.bus import Bus
from bus_tasks.transport.topology import DEFAULT_OPTIONS, TopologyOptions

_KOMBU = "bus_tasks.transport.kombu"

# URL scheme -> the module that implements the Bus for it.
TRANSPORTS = {
    "amqp": _KOMBU,
    "amqps": _KOMBU,
    "pyamqp": _KOMBU,
    "redis": _KOMBU,
    "rediss": _KOMBU,
    "memory": _KOMBU,
}


@dataclass(frozen=True, slots=True)
class BusOptions:
    """How one bus connects, retries and publishes; every field has the default of a client.

    - ``confirm_publish``: keep each message until the broker confirms it, re-send after a loss
      (where the broker confirms: RabbitMQ); ``max_unconfirmed`` bounds them, ``confirm_window``
      is how many may wait before publishing waits for some.
    - ``heartbeat_s``: the connection's heart-beat where the broker has one (0: none).
    - ``connect_timeout_s``: one connection attempt; ``connect_retries``: attempts in a row
      before an operation gives up (None: until a stop or a deadline); ``reconnect_max_s``: the
      longest pause of the back-off between attempts.
    - ``redis_key_prefix``: every Redis key of this deployment starts with it.
    - ``topology``: how the deployment lays out its queues.
    - ``login``: TLS files and login method, and the user publishes are stamped with (RabbitMQ).
    """

    confirm_publish: bool = False
    heartbeat_s: float = 0.0
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    connect_retries: int | None = None
    redis_key_prefix: str = ""
    reconnect_max_s: float = 5.0
    max_unconfirmed: int = 10_000
    confirm_window: int = 1_000
    topology: TopologyOptions = DEFAULT_OPTIONS
    login: BrokerLogin = NO_LOGIN


DEFAULT_BUS_OPTIONS = BusOptions()


class TransportModule(Protocol):
    """What a module of :data:`TRANSPORTS` offers."""

    def open_bus(self, url: str, options: BusOptions, stop: threading.Event | None) -> Bus: ...


def open(url: str, options: BusOptions = DEFAULT_BUS_OPTIONS, *, stop: threading.Event | None = None) -> Bus:
    """A bus on the broker of ``url`` (not yet connected: its first use connects).

    ``stop``: once set, waiting for the broker gives up with ``ShutdownRequested``.

    Raises:
        ValueError: when no transport serves the URL's scheme.
    """
    scheme = url.split("://", 1)[0].lower()
    module = TRANSPORTS.get(scheme)
    if module is None:
        known = ", ".join(sorted(TRANSPORTS))
        raise ValueError(f"no transport for {redact_url(url)!r}: the URL scheme is one of {known}")
    transport = cast(TransportModule, import_module(module))
    return transport.open_bus(url, options, stop)


def admin(bus: Bus) -> BrokerAdmin | None:
    """The :class:`BrokerAdmin` on ``bus``'s connection; None when its transport offers none."""
    factory = getattr(bus, "admin", None)
    return cast(Administered, bus).admin() if callable(factory) else None
