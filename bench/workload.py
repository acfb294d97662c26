"""The tasks every figure feeds: our events, their wire bodies, and the Celery events equivalent to them.

A task lives through three events, as a VDSM task does: ``created`` (init), ``updated`` (running,
50%), ``finished``. Its Celery twin goes ``task-received``, ``task-started``, ``task-succeeded``.
Both sides get their events decoded from JSON bodies, as they would off the wire, so that neither
shares strings with the generator that the other does not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bus_tasks import codec, names
from bus_tasks.config import DEFAULT_MAX_EVENT_BYTES
from bus_tasks.core.model import Event, decode_event
from bus_tasks.core.view import TaskView

SUBSYSTEM = "bench"
SELECTIVE_TAG = "bench:selective"
# Recent: a done task older than the aggregator's done_ttl_s would be expired as soon as it starts.
BASE_TIME = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

_STAGES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("created", {"state": "init", "message": "", "progress": None}),
    ("updated", {"state": "running", "message": "running job 1 of 1", "progress": 50}),
    ("finished", {"state": "finished", "message": "done", "progress": 100}),
)


def task_id(i: int, salt: int = 0) -> str:
    """A canonical UUID, distinct per ``(salt, i)``: runs that must not meet use other salts."""
    return str(uuid.UUID(int=(salt << 64) | (i + 1)))


def tags_for(i: int, *, selective_every: int | None = None, spm_every: int = 2) -> tuple[str, ...]:
    """One task in ``spm_every`` is storage (``spm``; half by default), the others gluster; every
    ``selective_every``-th also carries T."""
    tags: tuple[str, ...] = ("spm",) if i % spm_every == 1 else ("gluster", f"volume:gv{i % 10}")
    if selective_every is not None and i % selective_every == 0:
        tags += (SELECTIVE_TAG,)
    return tags


def event_fields(
    i: int, stage: int, *, salt: int = 0, selective_every: int | None = None, spm_every: int = 2
) -> dict[str, Any]:
    """The wire form of event ``stage`` (0, 1, 2) of task ``i``."""
    name, changes = _STAGES[stage]
    created = BASE_TIME + timedelta(milliseconds=i)
    task = {
        "id": task_id(i, salt),
        "subsystem": SUBSYSTEM,
        "verb": "createVolume" if i % 2 else "rebalance",
        "tags": tags_for(i, selective_every=selective_every, spm_every=spm_every),
        "code": 0,
        "result": "",
        "data": {},
        "created_at": created,
        "updated_at": created + timedelta(seconds=stage),
        **changes,
    }
    return {"schema": 1, "event": name, "seq": stage + 1, "task": task}


def bodies(
    n_tasks: int,
    *,
    stages: tuple[int, ...] = (0, 1, 2),
    salt: int = 0,
    selective_every: int | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Routing key and JSON body of each event, task after task, each task's events in order."""
    for i in range(n_tasks):
        for stage in stages:
            fields = event_fields(i, stage, salt=salt, selective_every=selective_every)
            yield names.event_routing_key(SUBSYSTEM, fields["event"]), codec.dumps(fields)


def events(
    n_tasks: int,
    *,
    stages: tuple[int, ...] = (0, 1, 2),
    salt: int = 0,
    selective_every: int | None = None,
) -> Iterator[Event]:
    """The same events, decoded and validated as the aggregator does it."""
    for _, body in bodies(n_tasks, stages=stages, salt=salt, selective_every=selective_every):
        yield decode_event(body, max_bytes=DEFAULT_MAX_EVENT_BYTES)


def build_view(
    n_tasks: int, *, selective_every: int | None = None, spm_every: int = 2, offset: int = 0
) -> TaskView:
    """A view of ``n_tasks`` (tasks ``offset`` on), each at one of its three stages (a mix of init,
    running, finished)."""
    view = TaskView()
    for i in range(offset, offset + n_tasks):
        body = codec.dumps(event_fields(i, i % 3, selective_every=selective_every, spm_every=spm_every))
        view.apply(decode_event(body, max_bytes=DEFAULT_MAX_EVENT_BYTES))
    return view


def celery_events(n_tasks: int) -> Iterator[dict[str, Any]]:
    """What Celery's event receiver gets for the same tasks (received, started, succeeded), decoded."""
    for event in _celery_events(n_tasks):
        yield json.loads(json.dumps(event))


def _celery_events(n_tasks: int) -> Iterator[dict[str, Any]]:
    hostname = "celery@bench"
    for i in range(n_tasks):
        uid = task_id(i)
        received = BASE_TIME.timestamp() + i / 1000.0
        common = {"uuid": uid, "hostname": hostname, "utcoffset": 0, "pid": 4242}
        yield {
            "type": "task-received",
            **common,
            "name": "createVolume" if i % 2 else "rebalance",
            "args": "()",
            "kwargs": "{}",
            "root_id": uid,
            "parent_id": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "timestamp": received,
            "local_received": received,
            "clock": 3 * i + 1,
        }
        yield {
            "type": "task-started",
            **common,
            "timestamp": received + 1.0,
            "local_received": received + 1.0,
            "clock": 3 * i + 2,
        }
        yield {
            "type": "task-succeeded",
            **common,
            "result": "''",
            "runtime": 1.0,
            "timestamp": received + 2.0,
            "local_received": received + 2.0,
            "clock": 3 * i + 3,
        }
