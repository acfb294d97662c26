"""``GET /api/watch``: one client's server-sent events from the mirror (docs/watching.md).

A snapshot of its selection (or, resuming, the changes after its revision), then each change,
a bookmark now and then so that its ``Last-Event-ID`` advances, and keep-alive comments. A
client that does not keep up is dropped (its queue is bounded, and so is how long a write may wait
for it to read); its browser reconnects and resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bus_tasks import codec
from bus_tasks.frontdoors.http.mirror import Change, Mirror, Opening, Selection, Subscriber

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
}
KEEP_ALIVE = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class SseTimings:
    """How often a quiet stream says something."""

    bookmark_s: float = 5.0  # a bookmark at most this often while nothing selected changes
    keep_alive_s: float = 15.0
    tick_s: float = 1.0  # how often an idle stream looks at the clock
    write_timeout_s: float = 30.0  # a client that leaves an event unread this long is dropped


class SlowClient(Exception):
    """Raised when a write to a watching client did not end within ``write_timeout_s``."""


def frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One server-sent event; ``id:`` only when given (the browser's Last-Event-ID keeps its last)."""
    head = b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: %d\n" % event_id
    return head + b"data: " + codec.dumps(data) + b"\n\n"  # one line: JSON without newlines


def change_frame(change: Change, event_id: int | None) -> bytes:
    data = {"revision": change.revision, "id": change.task_id, "task": change.task, "tags": list(change.tags)}
    return frame("change", data, event_id)


class EventStream:
    """Writes one subscriber's events to its response until the client goes or the server stops."""

    def __init__(
        self, response: web.StreamResponse, mirror: Mirror, subscriber: Subscriber, timings: SseTimings
    ) -> None:
        self.response = response
        self.mirror = mirror
        self.subscriber = subscriber
        self.timings = timings
        self.last_id = 0  # the id the client holds
        self._held = False  # changes were sent whose revision was not complete yet: id to come
        self._sent_at = time.monotonic()  # an event (not a keep-alive)
        self._wrote_at = self._sent_at

    async def run(self, opening: Opening) -> None:
        await self._open(opening)
        subscriber = self.subscriber
        while True:
            subscriber.wakeup.clear()
            if subscriber.closed or subscriber.overflowed:
                return
            if subscriber.relisted:
                subscriber.relisted = False
                await self._snapshot(self.mirror.snapshot(subscriber.selection))
                continue
            changes = subscriber.take()
            if changes:
                await self._changes(changes)
                continue
            # Nothing is queued and nothing is awaited from here to the bookmark's making: every
            # selected change up to ``complete`` has been written.
            now = time.monotonic()
            complete = self.mirror.complete
            if complete > self.last_id and (self._held or now - self._sent_at >= self.timings.bookmark_s):
                self._held = False
                self.last_id = complete
                await self._write(frame("bookmark", {"revision": complete}, complete), event=True)
                continue
            if now - self._wrote_at >= self.timings.keep_alive_s:
                await self._write(KEEP_ALIVE, event=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscriber.wakeup.wait(), self.timings.tick_s)

    async def _open(self, opening: Opening) -> None:
        if opening.gone is not None:
            await self._write(frame("gone", opening.gone.to_wire()), event=True)
        if opening.tasks is not None:
            await self._snapshot(opening)
        else:
            self.last_id = opening.revision
            await self._changes(list(opening.replay))

    async def _snapshot(self, opening: Opening) -> None:
        self.last_id = opening.revision
        self._held = False
        data = {"revision": opening.revision, "tasks": opening.tasks}
        await self._write(frame("snapshot", data, opening.revision), event=True)

    async def _changes(self, changes: list[Change]) -> None:
        if not changes:
            return
        complete = self.mirror.complete
        frames: list[bytes] = []
        for change in changes:
            # More changes of its revision may follow: until they are known to have come, the id
            # is the revision before, so that a resume repeats them rather than miss one.
            known = change.revision if change.revision <= complete else change.revision - 1
            self._held = known < change.revision
            self.last_id = max(self.last_id, known)
            frames.append(change_frame(change, self.last_id))
        await self._write(b"".join(frames), event=True)

    async def _write(self, data: bytes, *, event: bool) -> None:
        try:
            async with asyncio.timeout(self.timings.write_timeout_s):
                await self.response.write(data)
        except TimeoutError:
            raise SlowClient(f"a write waited {self.timings.write_timeout_s:g}s for it to read") from None
        self._wrote_at = time.monotonic()
        if event:
            self._sent_at = self._wrote_at


async def stream(
    request: web.Request,
    mirror: Mirror,
    selection: Selection,
    since: int | None,
    timings: SseTimings,
) -> web.StreamResponse:
    """Serve ``/api/watch`` for one client (the mirror has listed)."""
    response = web.StreamResponse(headers=SSE_HEADERS)
    peer = request.remote or "-"
    subscriber, opening = mirror.subscribe(selection, since)  # before any await: no change missed

    def drop() -> None:
        log.warning(
            "sse client %s dropped: more than %d changes queued (it does not keep up); it may resume",
            peer,
            subscriber.max_pending,
        )
        if request.transport is not None:
            request.transport.abort()  # a write waiting for the client to read ends now

    subscriber.on_overflow = drop
    log.info(
        "sse client %s watching tags=%s match=%s since=%s",
        peer,
        list(selection.tags),
        "all" if selection.match_all else "any",
        since,
    )
    try:
        await response.prepare(request)
        await EventStream(response, mirror, subscriber, timings).run(opening)
    except ConnectionResetError:
        log.info("sse client %s went away", peer)
    except SlowClient as exc:
        log.warning("sse client %s dropped: %s (it does not read); it may resume", peer, exc)
        if request.transport is not None:
            request.transport.abort()
    finally:
        mirror.unsubscribe(subscriber)
    return response
