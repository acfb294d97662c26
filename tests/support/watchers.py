"""A watcher double: iterates a real watch in a thread and rebuilds the selection it is told."""

from __future__ import annotations

import threading
from typing import Any

from bus_tasks.client import TasksClient
from bus_tasks.watching import Watch, WatchEvent


class Watcher:
    """Iterates ``watch`` (of ``client``, which it closes on :meth:`stop`) in a thread.

    ``tasks`` is the selection rebuilt from the events, ``revision`` the last event's; the first
    failure (a broken rule, or the watch's own error) is kept in ``error`` and ends the thread.
    With ``forward_only``, an event whose revision is below the previous one's is such a failure;
    without it, a listing may start over lower (a failover to a replica that is behind).
    """

    def __init__(self, client: TasksClient, watch: Watch, *, forward_only: bool = True) -> None:
        self.client = client
        self.watch = watch
        self.forward_only = forward_only
        self.events: list[WatchEvent] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.revision = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self.watch:
                self.events.append(event)
                if event.kind == "listing":
                    assert event.tasks is not None
                    self.tasks = dict(event.tasks)
                elif event.kind == "changed":
                    assert event.task_id is not None
                    assert event.task is not None
                    self.tasks[event.task_id] = event.task
                elif event.kind == "removed":
                    assert event.task_id is not None
                    self.tasks.pop(event.task_id, None)
                if self.forward_only or event.kind != "listing":
                    assert event.revision >= self.revision, "revisions go forward"
                self.revision = event.revision
        except BaseException as exc:
            self.error = exc

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def following(self) -> str | None:
        """The name of the aggregator the watch follows now."""
        following = self.watch.state.following
        return following.aggregator if following else None

    def stop(self) -> None:
        self.watch.close()
        self._thread.join(5.0)
        self.client.close()
