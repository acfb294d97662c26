"""``GET /api/watch``: snapshot, live changes per selection, ids that resume without a gap
(``Last-Event-ID`` or ``since``), ``gone`` then a snapshot, bookmarks, keep-alives, and a slow
client dropped at its bound."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientPayloadError, ClientResponse, ClientSession
from support.factories import task_id
from test_http_support import make_door, serving

from bus_tasks import codec
from bus_tasks.frontdoors.http.mirror import Mirror
from bus_tasks.frontdoors.http.server import HttpOptions
from bus_tasks.frontdoors.http.sse import SseTimings

A, B, C = task_id(1), task_id(2), task_id(3)
QUICK = SseTimings(bookmark_s=0.3, keep_alive_s=60.0, tick_s=0.05)
WAIT_S = 5.0


@dataclass(frozen=True)
class Event:
    event: str | None
    id: int | None
    data: Any


def details(n: int, *tags: str, state: str = "running") -> dict[str, Any]:
    return {"id": task_id(n), "tags": list(tags), "state": state}


async def next_event(response: ClientResponse, *, comments: bool = False) -> Event:
    """The next event of the stream (comments skipped unless asked for)."""
    while True:
        block = await asyncio.wait_for(response.content.readuntil(b"\n\n"), WAIT_S)
        if not block:
            raise EOFError("the stream ended")
        fields: dict[str, str] = {}
        comment = False
        for line in block.decode().strip("\n").split("\n"):
            if line.startswith(":"):
                comment = True
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if comment and not fields:
            if comments:
                return Event(None, None, block.decode())
            continue
        event_id = int(fields["id"]) if "id" in fields else None
        return Event(fields.get("event"), event_id, codec.loads(fields["data"]))


def door_with(mirror: Mirror, timings: SseTimings = QUICK) -> Any:
    return make_door(mirror=mirror, options=HttpOptions(sse=timings, listing_timeout_s=0.5)).door


def listed(revision: int = 10, **tasks: dict[str, Any]) -> Mirror:
    mirror = Mirror()
    mirror.listing(revision, {t["id"]: t for t in tasks.values()})
    return mirror


def test_a_watch_starts_with_a_snapshot_of_its_selection_then_its_changes_ids_never_past_complete() -> None:
    mirror = listed(a=details(1, "spm"), b=details(2, "hsm"))

    async def watch() -> list[Event]:
        async with serving(door_with(mirror)) as session, session.get("/api/watch?tag=spm") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            events = [await next_event(response)]
            mirror.changed(11, C, details(3, "spm"))
            mirror.changed(12, B, details(2, "hsm", state="finished"))  # not selected
            mirror.changed(12, A, details(1, "spm", state="finished"))  # same event: 12 not complete
            events.append(await next_event(response))
            events.append(await next_event(response))
            mirror.bookmark(12)
            events.append(await next_event(response))
            return events

    assert asyncio.run(watch()) == [
        Event("snapshot", 10, {"revision": 10, "tasks": {A: details(1, "spm")}}),
        Event("change", 11, {"revision": 11, "id": C, "task": details(3, "spm"), "tags": ["spm"]}),
        Event(
            "change",
            11,  # more changes of revision 12 may follow: its id is the revision before
            {"revision": 12, "id": A, "task": details(1, "spm", state="finished"), "tags": ["spm"]},
        ),
        Event("bookmark", 12, {"revision": 12}),
    ]


def test_a_task_that_leaves_the_selection_or_the_view_is_a_change_to_null() -> None:
    mirror = listed(a=details(1, "spm"), b=details(2, "spm", "gluster"))

    async def watch() -> list[Event]:
        async with (
            serving(door_with(mirror)) as session,
            session.get("/api/watch?tag=spm&tag=gluster&match=all") as response,
        ):
            events = [await next_event(response)]
            mirror.changed(11, B, details(2, "spm"))  # retagged: no longer all of them
            mirror.changed(12, A, None)  # never selected: nothing
            mirror.bookmark(12)
            events.append(await next_event(response))
            return events

    snapshot, change = asyncio.run(watch())
    assert snapshot.data["tasks"] == {B: details(2, "spm", "gluster")}
    assert change == Event("change", 11, {"revision": 11, "id": B, "task": None, "tags": ["spm"]})


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/watch?tag=spm", {"Last-Event-ID": "11"}),
        ("/api/watch?tag=spm&since=11", {}),
        ("/api/watch?tag=spm&since=2", {"Last-Event-ID": "11"}),  # the browser's header wins
    ],
)
def test_a_watch_resumes_after_last_event_id_or_since_with_only_what_it_missed(
    path: str, headers: dict[str, str]
) -> None:
    mirror = listed(a=details(1, "spm"))
    mirror.changed(11, A, details(1, "spm", state="aborting"))
    mirror.changed(12, B, details(2, "spm"))
    mirror.changed(13, C, details(3, "hsm"))
    mirror.changed(14, A, None)
    mirror.bookmark(14)

    async def watch() -> list[Event]:
        async with serving(door_with(mirror)) as session, session.get(path, headers=headers) as response:
            return [await next_event(response), await next_event(response)]

    assert asyncio.run(watch()) == [
        Event("change", 12, {"revision": 12, "id": B, "task": details(2, "spm"), "tags": ["spm"]}),
        Event("change", 14, {"revision": 14, "id": A, "task": None, "tags": ["spm"]}),
    ]


def test_a_revision_that_cannot_be_resumed_is_gone_then_a_snapshot() -> None:
    mirror = Mirror(history=2)
    mirror.listing(10, {})
    for revision in (11, 12, 13):
        mirror.changed(revision, task_id(revision), details(revision, "spm"))
    mirror.bookmark(13)

    async def watch() -> list[Event]:
        async with (
            serving(door_with(mirror)) as session,
            session.get("/api/watch", headers={"Last-Event-ID": "10"}) as response,
        ):
            return [await next_event(response), await next_event(response)]

    gone, snapshot = asyncio.run(watch())
    assert (gone.event, gone.id, gone.data["code"]) == ("gone", None, -32010)
    assert "revision 10 cannot be resumed" in gone.data["message"]
    assert (snapshot.event, snapshot.id, sorted(snapshot.data["tasks"])) == (
        "snapshot",
        13,
        [task_id(11), task_id(12), task_id(13)],
    )


def test_a_quiet_selection_gets_bookmarks_so_its_last_event_id_advances() -> None:
    mirror = listed(a=details(1, "spm"))

    async def watch() -> list[Event]:
        async with serving(door_with(mirror)) as session, session.get("/api/watch?tag=spm") as response:
            events = [await next_event(response)]
            for revision in range(11, 15):
                mirror.changed(revision, task_id(100 + revision), details(100 + revision, "hsm"))
            mirror.bookmark(14)
            events.append(await next_event(response))
            return events

    snapshot, bookmark = asyncio.run(watch())
    assert snapshot.id == 10
    assert bookmark == Event("bookmark", 14, {"revision": 14})


def test_an_idle_stream_sends_keep_alive_comments() -> None:
    mirror = listed()

    async def watch() -> Event:
        timings = SseTimings(bookmark_s=60.0, keep_alive_s=0.2, tick_s=0.05)
        async with serving(door_with(mirror, timings)) as session, session.get("/api/watch") as response:
            await next_event(response)
            return await next_event(response, comments=True)

    assert asyncio.run(watch()).data == ": keep-alive\n\n"


def test_a_client_that_does_not_keep_up_is_dropped_and_resumes_with_what_it_missed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mirror = Mirror(max_pending=3)
    mirror.listing(10, {})

    async def watch() -> tuple[Event, list[Event]]:
        async with serving(door_with(mirror)) as session:
            async with session.get("/api/watch") as response:
                snapshot = await next_event(response)
                for revision in range(11, 21):  # ten changes before the stream can write one
                    mirror.changed(revision, task_id(revision), details(revision))
                mirror.bookmark(20)
                with pytest.raises(ClientPayloadError):  # cut: the chunked body never ended
                    await next_event(response)
            headers = {"Last-Event-ID": str(snapshot.id)}
            async with session.get("/api/watch", headers=headers) as response:
                return snapshot, [await next_event(response) for _ in range(10)]

    with caplog.at_level(logging.WARNING, logger="bus_tasks.frontdoors.http.sse"):
        snapshot, resumed = asyncio.run(watch())
    assert snapshot.id == 10
    assert [(e.event, e.id) for e in resumed] == [("change", r) for r in range(11, 21)]
    assert any("dropped: more than 3 changes queued" in r.getMessage() for r in caplog.records)
    assert mirror.subscribers == set()


def test_a_bad_last_event_id_is_400_with_code_1000() -> None:
    async def watch() -> tuple[int, Any]:
        async with (
            serving(door_with(listed())) as session,
            session.get("/api/watch", headers={"Last-Event-ID": "x1"}) as response,
        ):
            return response.status, codec.loads(await response.read())

    assert asyncio.run(watch()) == (
        400,
        {"code": 1000, "message": "Invalid parameter: ('Last-Event-ID', 'x1')"},
    )


def test_a_watch_before_the_first_listing_is_503_after_its_wait() -> None:
    async def watch() -> tuple[int, Any]:
        async with serving(door_with(Mirror())) as session, session.get("/api/watch") as response:
            return response.status, codec.loads(await response.read())

    status, body = asyncio.run(watch())
    assert (status, body["code"]) == (503, 100)


def test_a_new_listing_sends_every_stream_a_new_snapshot_and_closing_ends_them() -> None:
    mirror = listed(a=details(1, "spm"))

    async def watch(session: ClientSession) -> list[Event]:
        async with session.get("/api/watch") as response:
            events = [await next_event(response)]
            mirror.listing(3, {B: details(2, "hsm")})
            events.append(await next_event(response))
            mirror.close()
            with pytest.raises((EOFError, asyncio.IncompleteReadError)):
                await next_event(response)
            return events

    async def run() -> list[Event]:
        async with serving(door_with(mirror)) as session:
            return await watch(session)

    first, second = asyncio.run(run())
    assert (first.id, second) == (10, Event("snapshot", 3, {"revision": 3, "tasks": {B: details(2, "hsm")}}))
