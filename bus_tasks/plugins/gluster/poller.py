"""Poll gluster, diff against the publisher's records, publish what changed; stop gluster tasks."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable

from bus_tasks.core.model import TaskRecord, canonical_task_id
from bus_tasks.plugins.gluster import mapping
from bus_tasks.plugins.gluster.cli import GlusterCli
from bus_tasks.plugins.gluster.errors import GlusterCommandFailed, GlusterError, RevertNotSupported
from bus_tasks.plugins.gluster.xml import ListedTask, MigrationStatus
from bus_tasks.subsystem.publisher import TaskPublisher

log = logging.getLogger(__name__)

SUBSYSTEM = "gluster"


class GlusterPoller:
    """Keeps a publisher's tasks equal to what gluster lists, one :meth:`poll` at a time.

    ``restored``: the records the aggregator still has of this subsystem (after a restart); a
    task gluster lists is adopted from them instead of created anew, and one gluster no longer
    lists is published as done. Thread-safe: :meth:`stop_task` runs in the control thread.
    """

    def __init__(
        self, publisher: TaskPublisher, cli: GlusterCli, *, restored: Iterable[TaskRecord] = ()
    ) -> None:
        self.publisher = publisher
        self.cli = cli
        self._restored = {record.id: record for record in restored}
        self._seen: set[str] = set()  # listed ids this poller has put into the publisher
        self._lock = threading.Lock()  # one change at a time: a poll's or a stop's
        self._stops = 0  # a clock of finished stops: a poll begun before one is stale for its task
        self._stopped_at: dict[str, int] = {}
        self._stopping: set[str] = set()
        self._failure: str | None = None  # why the last listing failed
        self._task_failures: dict[str, str] = {}  # why a task's last status call failed
        self._ignored: set[str] = set()  # listed tasks that cannot be published, logged once

    def poll(self) -> bool:
        """Read gluster once and publish what changed; False when the listing failed.

        Raises:
            BrokerUnavailable: when a change cannot be published (the next poll tries again).
        """
        with self._lock:
            begun = self._stops
        try:
            listed = self.cli.volume_tasks()
        except GlusterError as exc:
            self._note_failure(exc.message)
            return False
        self._note_failure(None)
        present: set[str] = set()
        wanted: dict[str, mapping.Desired] = {}
        for task in listed:
            task_id = self._usable_id(task)
            if task_id is None:
                continue
            present.add(task_id)
            want = self._read(task_id, task)
            if want is not None:
                wanted[task_id] = want
        with self._lock:
            fresh = {t: w for t, w in wanted.items() if not self._busy(t, begun)}
            self._apply(fresh, present, begun)
        return True

    def stop_task(self, task_id: str) -> None:
        """The publisher's stop handler: ``gluster volume rebalance|remove-brick ... stop``.

        Raises:
            GlusterCommandFailed: when gluster refuses or fails; the next poll republishes the
                task's real state (it shows ``aborting`` until then).
        """
        record = self.publisher.get(task_id)
        volume, task_type = record.data.get("volume"), record.data.get("type")
        listed_bricks = record.data.get("bricks")
        bricks = [str(b) for b in listed_bricks] if isinstance(listed_bricks, list) else []
        with self._lock:
            self._stopping.add(record.id)
        try:
            if task_type == "REBALANCE" and isinstance(volume, str):
                status = self.cli.rebalance_stop(volume)
            elif task_type == "REMOVE_BRICK" and isinstance(volume, str) and bricks:
                status = self.cli.remove_brick_stop(volume, bricks)
            else:
                raise GlusterCommandFailed(f"a {task_type} task of volume {volume} cannot be stopped")
        except GlusterError:
            self._stopped(record.id, None)
            raise
        self._stopped(record.id, status)

    def revert_task(self, task_id: str) -> None:
        """The publisher's revert handler: gluster cannot undo its tasks."""
        raise RevertNotSupported(task_id)

    # -- inside -----------------------------------------------------------------------------

    def _usable_id(self, task: ListedTask) -> str | None:
        try:
            return canonical_task_id(task.task_id)
        except ValueError:
            self._ignore(
                task.task_id, f"gluster task id {task.task_id!r} of volume {task.volume} is not a UUID"
            )
            return None

    def _read(self, task_id: str, task: ListedTask) -> mapping.Desired | None:
        """The record ``task`` should have, with its counters; None to skip it this poll."""
        status: MigrationStatus | None = None
        try:
            if task.kind == "Rebalance":
                status = self.cli.rebalance_status(task.volume)
            elif task.kind == mapping.REMOVE_BRICK:
                status = self.cli.remove_brick_status(task.volume, task.bricks)
            want = mapping.desired(task, status)
        except GlusterError as exc:  # VDSM's rule: only this task is skipped
            if self._task_failures.get(task_id) != exc.message:
                log.warning(
                    "gluster task %s (volume %s) skipped: %s", task_id, task.volume, _line(exc.message)
                )
            self._task_failures[task_id] = exc.message
            return None
        except mapping.UnknownTaskType as exc:
            self._ignore(task_id, f"gluster task {task_id} (volume {task.volume}) is not published: {exc}")
            return None
        if self._task_failures.pop(task_id, None) is not None:
            log.info("gluster task %s answers again", task_id)
        return dataclasses.replace(want, task_id=task_id)

    def _apply(self, wanted: dict[str, mapping.Desired], present: set[str], begun: int) -> None:
        publisher = self.publisher
        tasks = publisher.tasks
        for task_id, want in wanted.items():
            current = tasks.get(task_id)
            if current is None:
                if task_id in self._seen:
                    continue  # cleared through the aggregator while gluster still lists it
                current = self._restored.pop(task_id, None)
                if current is None:
                    current = publisher.create(
                        want.verb,
                        want.tags,
                        task_id=task_id,
                        state=want.state,
                        message=want.message,
                        data=want.data,
                    )
                    log.info(
                        "gluster task %s: %s of volume %s, %s",
                        task_id,
                        want.verb,
                        want.data["volume"],
                        want.state,
                    )
                else:
                    publisher.adopt(current)
                    log.info("gluster task %s adopted from the aggregator", task_id)
                self._seen.add(task_id)
            delta = mapping.changes(current, want)
            if delta:
                publisher.update(task_id, **delta)
                if "state" in delta:
                    log.info(
                        "gluster task %s: %s -> %s (%s)", task_id, current.state, want.state, want.message
                    )
        for task_id, current in tasks.items():
            if task_id not in present and not self._busy(task_id, begun):
                self._vanish(current, adopt=False)
        for task_id in [t for t in self._restored if t not in present]:
            self._vanish(self._restored.pop(task_id), adopt=True)
        self._restored.clear()  # only the first poll after a start may adopt
        self._seen &= present | set(publisher.tasks)
        self._task_failures = {t: m for t, m in self._task_failures.items() if t in present}
        self._stopped_at = {t: at for t, at in self._stopped_at.items() if at > begun}

    def _vanish(self, current: TaskRecord, *, adopt: bool) -> None:
        """A task gluster no longer lists: published as done, then forgotten."""
        delta = mapping.vanished(current)
        if adopt and delta:
            self.publisher.adopt(current)
        if delta:
            record = self.publisher.update(current.id, **delta)
            log.info("gluster task %s no longer listed: %s (%s)", current.id, record.state, record.message)
        self.publisher.forget(current.id)
        self._seen.discard(current.id)

    def _busy(self, task_id: str, begun: int) -> bool:
        """A stop of the task runs, or ended after the poll began (its reading is stale)."""
        return task_id in self._stopping or self._stopped_at.get(task_id, 0) > begun

    def _stopped(self, task_id: str, status: MigrationStatus | None) -> None:
        with self._lock:
            self._stopping.discard(task_id)
            self._stops += 1
            self._stopped_at[task_id] = self._stops
            if status is not None and task_id in self.publisher:
                record = self.publisher.update(
                    task_id, **mapping.stopped(self.publisher.get(task_id), status)
                )
                log.info("gluster task %s stopped: %s", task_id, record.message)

    def _note_failure(self, message: str | None) -> None:
        """One log line when the listing starts failing, fails otherwise, or answers again."""
        if message == self._failure:
            return
        if message is None:
            log.info("gluster CLI answers again: catching up")
        else:
            count = len(self.publisher.tasks)
            log.warning(
                "gluster tasks listing failed, keeping the %d last known tasks: %s", count, _line(message)
            )
        self._failure = message

    def _ignore(self, key: str, why: str) -> None:
        if key not in self._ignored:
            self._ignored.add(key)
            log.warning("%s", why)


def _line(message: str) -> str:
    """A multi-line VDSM message on one log line."""
    return " | ".join(part for part in message.splitlines() if part)
