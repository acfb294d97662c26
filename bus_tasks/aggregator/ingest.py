"""Ingest: events in, applied to the view, stored in batches, acked only once stored."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from bus_tasks import names
from bus_tasks.aggregator.changes import ChangeFeed
from bus_tasks.core.model import ANNOUNCED, decode_announced, decode_event
from bus_tasks.core.view import Outcome, TaskView
from bus_tasks.errors import EventRejected, StoreUnavailable
from bus_tasks.identity import OFF, Speech, TrustPolicy, refusal
from bus_tasks.store import Store
from bus_tasks.transport import Bus, Delivery

log = logging.getLogger(__name__)

_ANNOUNCED_SUFFIX = f".{ANNOUNCED}"
_COUNTED = {outcome: f"events_{outcome.value}" for outcome in Outcome}  # the key in ``counts``
# The hot path's enum members, looked up once: each ``Outcome.APPLIED`` goes through the enum's
# metaclass (~0.1 us), and an Enum member's hash is a Python method.
_APPLIED, _CLEARED = Outcome.APPLIED, Outcome.CLEARED
_COUNTED_APPLIED = _COUNTED[_APPLIED]
_SAYS_EVENT, _SAYS_CLEARED = Speech.EVENT, Speech.CLEARED


class StoreHealth:
    """Whether the store takes writes, and when to try again after it failed (with back-off).

    Logs one warning when the store starts failing and one when it is back, not one per try.
    """

    def __init__(self, store: Store, *, first_retry_s: float = 0.1, max_retry_s: float = 5.0) -> None:
        self.store = store
        self.failing: StoreUnavailable | None = None
        self.failures = 0
        self._first_retry_s = first_retry_s
        self._max_retry_s = max_retry_s
        self._delay_s = first_retry_s
        self._retry_at = 0.0

    def due(self) -> bool:
        """True when a write may be tried now: the store is fine, or its back-off has passed."""
        return self.failing is None or time.monotonic() >= self._retry_at

    def wait_s(self) -> float:
        """Seconds until the next try (0 when the store is fine)."""
        return 0.0 if self.failing is None else max(self._retry_at - time.monotonic(), 0.0)

    def failed(self, exc: StoreUnavailable, *, held: int) -> None:
        self.failures += 1
        if self.failing is None:
            log.warning("%s; ingest paused with %d events not stored (none acked), retrying", exc, held)
        else:
            log.debug("store still failing: %s", exc)
            self._delay_s = min(self._delay_s * 2, self._max_retry_s)
        self.failing = exc
        self._retry_at = time.monotonic() + self._delay_s

    def succeeded(self) -> None:
        if self.failing is not None:
            log.warning("store %s is back after %d failed tries: ingest resumed", self.store, self.failures)
            self.failing = None
            self.failures = 0
            self._delay_s = self._first_retry_s


class Ingest:
    """Applies each event to the view, buffers it for the store, acks in batches after commits.

    A poison event is dead-lettered with its reason; a store that fails pauses the acks (see
    :class:`StoreHealth`).
    """

    def __init__(
        self,
        connection: Bus,
        view: TaskView,
        store: Store,
        counts: Counter[str],
        *,
        max_event_bytes: int,
        ack_batch: int,
        feed: ChangeFeed,
        log_offsets: bool = False,
        on_gap: Callable[[int, int], None] | None = None,
        on_commit: Callable[[float, bool], None] | None = None,
        trust: TrustPolicy = OFF,
    ) -> None:
        self.connection = connection
        self.feed = feed  # every change applied is recorded there, at its revision
        self.view = view
        self.store = store
        self.counts = counts
        self.health = StoreHealth(store)
        self.max_event_bytes = max_event_bytes
        self.ack_batch = ack_batch
        self.unacked: list[Delivery] = []
        self.log_offsets = log_offsets  # events come from a stream: revisions are its offsets
        self._on_gap = on_gap  # (first offset missed, first offset read): the log lost them
        self._expected: int | None = None  # the offset the stream should start at, once asked
        self._on_commit = on_commit  # (seconds, succeeded) of every commit tried: for metrics
        self.trust = trust  # whose events are believed (SPEC 15)

    def start_offset(self) -> int | str:
        """Where reading the stream starts, asked at every (re)subscription: right after the
        last event applied (the view's revision counts offsets from 1), or at the first."""
        self._expected = self.view.revision
        return self.view.revision if self.view.revision else "first"

    def on_event(self, delivery: Delivery) -> None:
        self._advance(delivery)
        if delivery.routing_key.endswith(_ANNOUNCED_SUFFIX):
            self._on_announced(delivery)
            return
        view = self.view
        try:
            event = decode_event(delivery.body, max_bytes=self.max_event_bytes)
            if self.trust.mode != "off":
                speech = _SAYS_CLEARED if event.event == "cleared" else _SAYS_EVENT
                self._believe(speech, event.task.subsystem, delivery)
            outcome = view.apply(event)
        except EventRejected as exc:
            self._dead_letter(delivery, exc.reason)
            return
        task_id = event.task.id
        if outcome is _APPLIED:
            self.counts[_COUNTED_APPLIED] += 1
            entry = view.get(task_id)
            self.store.put(entry)
            self.feed.changed_entry(view.revision, entry)
        else:
            self.counts[_COUNTED[outcome]] += 1
            if outcome is _CLEARED:
                cleared_by = delivery.headers.get(names.HEADER_CLEARED_BY)
                if isinstance(cleared_by, str):  # a call's: a repeat of it finds the task cleared
                    view.cleared_by(task_id, cleared_by)
                self.store.bury(task_id, view.tombstones[task_id])
                self.feed.removed(view.revision, task_id, event.task.tags)
            elif event.event == "cleared":
                self.feed.came_back(view.revision, task_id)
        if log.isEnabledFor(logging.DEBUG):  # the hot path: not even the arguments otherwise
            log.debug("event %s task=%s seq=%d %s", event.event, event.task.id, event.seq, outcome.value)
        self.unacked.append(delivery)
        if len(self.unacked) >= self.ack_batch and self.health.due():
            self.flush()

    def _advance(self, delivery: Delivery) -> None:
        """The view's revision: the log's position just past this delivery (a stream's offset
        plus one, the same on every replica), or else this aggregator's count of deliveries."""
        offset = delivery.position if self.log_offsets else None
        if offset is None:
            revision = self.view.revision + 1
        else:
            if self._expected is not None:
                if offset > self._expected and self._on_gap is not None:
                    self._on_gap(self._expected, offset)
                self._expected = None
            revision = offset + 1
        self.view.revision = revision

    def _on_announced(self, delivery: Delivery) -> None:
        """The end of a subsystem's announce: its tasks that the set no longer lists leave."""
        try:
            announced = decode_announced(delivery.body, max_bytes=self.max_event_bytes)
            self._believe(Speech.ANNOUNCED, announced.subsystem, delivery)
            gone = self.view.reconcile(announced)
        except EventRejected as exc:
            self._dead_letter(delivery, exc.reason)
            return
        for entry in gone:
            self.store.bury(entry.id, self.view.tombstones[entry.id])
            self.feed.removed(self.view.revision, entry.id, entry.tags)
        self.counts["announces"] += 1
        self.counts["events_reconciled"] += len(gone)
        log.info(
            "subsystem %s announced %d live tasks; %d it no longer has left the view%s",
            announced.subsystem,
            len(announced.tasks),
            len(gone),
            f": {', '.join(e.id for e in gone[:5])}{' ...' if len(gone) > 5 else ''}" if gone else "",
        )
        self.unacked.append(delivery)

    def flush(self, *, force: bool = False) -> bool:
        """Make applied events durable, then ack them; False while the store is failing.

        While it fails, a commit is tried again only once its back-off has passed (or ``force``);
        the events stay unacked, and the broker stops delivering at ``prefetch_count``.
        """
        if not self.unacked:
            return True
        if not (force or self.health.due()):
            return False
        try:
            self._commit()
        except StoreUnavailable as exc:
            self.health.failed(exc, held=len(self.unacked))
            return False
        self.health.succeeded()
        self.connection.ack_all(self.unacked)
        self.unacked.clear()
        return True

    def commit(self) -> None:
        """Write what is buffered now (a clear, an expiry); on failure it waits for the next flush."""
        try:
            self._commit()
        except StoreUnavailable as exc:
            self.health.failed(exc, held=len(self.unacked))

    def _commit(self) -> None:
        # Every event read so far is applied and its writes are buffered: the revision goes with
        # them, once per commit rather than once per event.
        started = time.perf_counter()
        try:
            self.store.mark(self.view.revision)
            self.store.commit()
        except Exception:
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started, False)
            raise
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - started, True)

    def forget_unacked(self) -> int:
        """The connection was lost: its deliveries come again on the next one. Returns how many."""
        count = len(self.unacked)
        self.unacked.clear()
        return count

    def wait_s(self, timeout_s: float) -> float:
        """How long the loop may wait for more deliveries before it must flush or retry."""
        if not self.unacked:
            return timeout_s
        if self.health.failing is None:
            return 0.005  # a short look for more before acking what waits
        return min(max(self.health.wait_s(), 0.005), timeout_s)  # until the next try

    def _believe(self, speech: Speech, subsystem: str, delivery: Delivery) -> None:
        """Raises EventRejected (counted) when the broker's user_id may not say this (SPEC 15)."""
        reason = refusal(self.trust, speech, subsystem, delivery.user_id)
        if reason is not None:
            self.counts["events_refused_identity"] += 1
            raise EventRejected(reason)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.counts["events_dead"] += 1
        log.warning("event rejected key=%r: %r", delivery.routing_key, reason)
        self.flush()  # keep acks in delivery order
        self.connection.dead_letter(delivery, reason)
