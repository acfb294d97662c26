"""Consumer handlers the tests give a bus: keep each delivery's body, then settle it."""

from __future__ import annotations

from collections.abc import Callable

from bus_tasks.transport import Delivery


def collect_into(bodies: list[bytes]) -> Callable[[Delivery], None]:
    """A handler that appends every delivery's body to ``bodies`` and acks it."""

    def handle(delivery: Delivery) -> None:
        bodies.append(delivery.body)
        delivery.ack()

    return handle
