"""Consumer handlers the tests give a bus (keep each delivery's body, then settle it), and what
tells two deliveries apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bus_tasks.transport import Delivery


def collect_into(bodies: list[bytes]) -> Callable[[Delivery], None]:
    """A handler that appends every delivery's body to ``bodies`` and acks it."""

    def handle(delivery: Delivery) -> None:
        bodies.append(delivery.body)
        delivery.ack()

    return handle


def delivery_fields(delivery: Delivery) -> tuple[Any, ...]:
    """What a consumer gets of ``delivery``: equal for two paths that delivered the same message."""
    return (
        delivery.body,
        delivery.routing_key,
        delivery.headers,
        delivery.reply_to,
        delivery.correlation_id,
        delivery.expiration_ms,
        delivery.user_id,
        delivery.position,
    )
