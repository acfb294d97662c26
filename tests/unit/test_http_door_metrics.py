"""The HTTP front door's saturation metrics move: watchers open against their limit, and
requests refused for the door's limits (the alert "front door saturated" reads them)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from test_http_limits import listed, within
from test_http_sse import QUICK, next_event
from test_http_support import make_door, serving

from bus_tasks.frontdoors.http.server import HttpOptions

pytestmark = pytest.mark.timeout(60)

MARGIN_S = 3.0


def _values(registry: CollectorRegistry) -> dict[str, float | None]:
    return {
        "watchers": registry.get_sample_value("bus_tasks_http_watchers"),
        "limit": registry.get_sample_value("bus_tasks_http_watchers_limit"),
        "refused_watchers": registry.get_sample_value("bus_tasks_http_refused_total", {"reason": "watchers"}),
        "refused_body": registry.get_sample_value("bus_tasks_http_refused_total", {"reason": "body"}),
    }


def test_watchers_and_refusals_are_counted_as_the_door_fills_and_empties() -> None:
    registry = CollectorRegistry()
    options = HttpOptions(sse=QUICK, max_watchers=1, max_body_bytes=16)
    door = make_door(mirror=listed(1), options=options, registry=registry).door
    seen = [_values(registry)]

    async def run() -> None:
        async with serving(door) as session:
            first = await session.get("/api/watch")
            assert (await next_event(first)).event == "snapshot"
            seen.append(_values(registry))
            async with session.get("/api/watch") as over:
                assert over.status == 503
            async with session.post(
                "/api/tasks/00000000-0000-4000-8000-000000000001/stop", data=b"x" * 17
            ) as big:
                assert big.status == 413
            seen.append(_values(registry))
            first.close()
            await within(MARGIN_S, "the watch ended", lambda: door.watchers == 0)
            seen.append(_values(registry))

    asyncio.run(run())
    assert seen == [
        {"watchers": 0.0, "limit": 1.0, "refused_watchers": 0.0, "refused_body": 0.0},
        {"watchers": 1.0, "limit": 1.0, "refused_watchers": 0.0, "refused_body": 0.0},
        {"watchers": 1.0, "limit": 1.0, "refused_watchers": 1.0, "refused_body": 1.0},
        {"watchers": 0.0, "limit": 1.0, "refused_watchers": 1.0, "refused_body": 1.0},
    ]
