"""Prometheus metrics of one aggregator, in a registry of its own (docs/metrics.md).

The hot path does not call prometheus: events are counted in the aggregator's ``counts`` and
tasks per state in the view, and :meth:`Metrics.sync` (on the loop thread, at most every
``every_s``) moves the metrics by what changed. Calls, commits and reconnects are rare enough
to be observed as they happen. A scrape (``generate_latest(metrics.registry)``, from any
thread) reads prometheus' own objects only, never the view or ``counts``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import get_args

from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector
from prometheus_client import Counter as PromCounter
from pydantic import BaseModel

from bus_tasks.aggregator.liveness import Liveness
from bus_tasks.aggregator.methods import Method
from bus_tasks.aggregator.policy import RPC_OUTCOMES, CallPolicy
from bus_tasks.aggregator.replicas import Replicas
from bus_tasks.core.model import State
from bus_tasks.core.view import Outcome, TaskView
from bus_tasks.protocol import control
from bus_tasks.protocol.context import CallContext
from bus_tasks.transport import Bus

DEFAULT_SYNC_EVERY_S = 0.5
UNKNOWN_METHOD = "unknown"  # a call of no method in the table, or that could not be parsed
# In-process answers take well under a millisecond; forwarded calls up to the caller's deadline.
RPC_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
EVENT_OUTCOMES = (*(o.value for o in Outcome), "dead")
_COMMANDS: tuple[str, ...] = get_args(control.Command)


class Metrics(CallPolicy):
    """The aggregator's metrics; every label set exists from the first scrape, so rates work."""

    def __init__(
        self,
        *,
        counts: Counter[str],
        view: TaskView,
        connection: Bus,
        liveness: Liveness,
        replicas: Replicas,
        subsystems: Iterable[str] = (),
        every_s: float = DEFAULT_SYNC_EVERY_S,
    ) -> None:
        """Args:
        counts: the aggregator's counts of what it did (the keys of ingest, relay, presence ...).
        subsystems: known before any of their tasks arrives (the test tasks' own).
        every_s: :meth:`tick` syncs at most this often.
        """
        self.registry = CollectorRegistry()
        self._counts = counts
        self._view = view
        self._connection = connection
        self._liveness = liveness
        self._replicas = replicas
        # Replicas' revisions compare only when they read one log (a stream): else each counts its own.
        self._shared_log = connection.topology.uses_stream
        self.every_s = every_s
        self._synced_at = time.monotonic()  # every series starts at zero: as good as a sync
        registry = self.registry
        ProcessCollector(registry=registry)  # memory and CPU of the process, read at scrape time

        events = PromCounter(
            "bus_tasks_events", "Events handled, by outcome.", ["outcome"], registry=registry
        )
        removed = PromCounter(
            "bus_tasks_tasks_removed",
            "Tasks this aggregator removed: cleared by a call it served, expired, or gone from an announce.",
            ["reason"],
            registry=registry,
        )
        heartbeats = PromCounter(
            "bus_tasks_heartbeats", "Heartbeats received, by outcome.", ["outcome"], registry=registry
        )
        forwarded = PromCounter(
            "bus_tasks_control_forwarded",
            "Control commands forwarded to their subsystem.",
            ["command"],
            registry=registry,
        )
        answered = PromCounter(
            "bus_tasks_control_answered",
            "Forwarded control commands their subsystem answered in time.",
            ["command"],
            registry=registry,
        )
        timeouts = PromCounter(
            "bus_tasks_control_timeouts",
            "Forwarded control commands answered with code 100: the subsystem did not answer in time.",
            ["command"],
            registry=registry,
        )

        def plain(name: str, documentation: str) -> PromCounter:
            return PromCounter(name, documentation, registry=registry)

        # The key in ``counts`` -> the counter it moves.
        self._counted: dict[str, PromCounter] = {
            **{f"events_{o}": events.labels(o) for o in EVENT_OUTCOMES},
            "cleared": removed.labels("cleared"),
            "expired": removed.labels("expired"),
            "events_reconciled": removed.labels("reconciled"),
            "heartbeats": heartbeats.labels("accepted"),
            "heartbeats_rejected": heartbeats.labels("rejected"),
            "announces": plain("bus_tasks_announces", "Complete announces of a subsystem's live tasks."),
            "log_gaps": plain("bus_tasks_log_gaps", "Times the event log no longer held what was missed."),
            "requests_expired": plain(
                "bus_tasks_rpc_expired", "Requests dropped unanswered: their caller had given up."
            ),
            "batches": plain(
                "bus_tasks_rpc_batches", "JSON-RPC batches served (their calls count one each)."
            ),
            "control_late_replies": plain(
                "bus_tasks_control_late_replies",
                "Subsystem answers that came after the call was answered (code 100, or a repeat's).",
            ),
            "control_sent_again": plain(
                "bus_tasks_control_sent_again",
                "Forwarded commands sent again once the broker connection was recovered.",
            ),
            **{f"control_{c}": forwarded.labels(c) for c in _COMMANDS},
            **{f"control_answered_{c}": answered.labels(c) for c in _COMMANDS},
            **{f"control_timeouts_{c}": timeouts.labels(c) for c in _COMMANDS},
        }
        self._synced: dict[str, int] = dict.fromkeys(self._counted, 0)
        self._reconnects = plain("bus_tasks_broker_reconnects", "Broker connections lost and re-established.")
        self._reconnects_synced = 0

        self._rpc_requests = PromCounter(
            "bus_tasks_rpc_requests",
            "Calls served, by method (canonical name) and outcome.",
            ["method", "outcome"],
            registry=registry,
        )
        self._rpc_seconds = Histogram(
            "bus_tasks_rpc_duration_seconds",
            "Time to serve a call: from the view, or for a forwarded one until its answer or code 100.",
            ["method"],
            buckets=RPC_BUCKETS_S,
            registry=registry,
        )
        self._canonical: dict[str, str] = {}
        self._add_method(UNKNOWN_METHOD)

        self._commit_seconds = Histogram(
            "bus_tasks_store_commit_duration_seconds",
            "Time of one store commit that succeeded.",
            buckets=COMMIT_BUCKETS_S,
            registry=registry,
        )
        self._commit_failures = plain("bus_tasks_store_commit_failures", "Store commits that failed.")

        self._tasks = Gauge(
            "bus_tasks_tasks",
            "Live tasks in the view, by subsystem and state.",
            ["subsystem", "state"],
            registry=registry,
        )
        self._task_series: dict[tuple[str, State], Gauge] = {}
        self._subsystems: set[str] = set()
        self._pinned = frozenset(subsystems)  # listed always, tasks or not
        for subsystem in subsystems:
            self._add_subsystem(subsystem)
        self._tombstones = Gauge("bus_tasks_tombstones", "Cleared tasks remembered.", registry=registry)
        self._revision = Gauge(
            "bus_tasks_revision",
            "The view's revision: the event log's position it reflects.",
            registry=registry,
        )
        self._lag = Gauge(
            "bus_tasks_replica_lag",
            "This aggregator's revision minus another's, as of its last heartbeat (a shared log only).",
            ["replica"],
            registry=registry,
        )
        self._lagging: set[str] = set()

    def add_methods(self, table: Mapping[str, Method]) -> None:
        """The dispatcher's table (name or alias -> method): calls count under canonical names."""
        for name, method in table.items():
            self._canonical[name] = method.name
            self._add_method(method.name)

    def _add_method(self, canonical: str) -> None:
        self._canonical[canonical] = canonical
        for outcome in RPC_OUTCOMES:
            self._rpc_requests.labels(canonical, outcome)
        self._rpc_seconds.labels(canonical)

    def served(
        self,
        context: CallContext,
        method: str,
        outcome: str,
        seconds: float,
        *,
        params: BaseModel | None = None,
    ) -> None:
        """One call answered (a call policy's hook); a name not in the table counts as unknown."""
        canonical = self._canonical.get(method, UNKNOWN_METHOD)
        self._rpc_requests.labels(canonical, outcome).inc()
        self._rpc_seconds.labels(canonical).observe(seconds)

    def store_committed(self, seconds: float, succeeded: bool) -> None:
        """One store commit tried (see ``Ingest``)."""
        if succeeded:
            self._commit_seconds.observe(seconds)
        else:
            self._commit_failures.inc()

    def tick(self) -> None:
        """Sync, unless the last sync was less than ``every_s`` ago."""
        if time.monotonic() - self._synced_at >= self.every_s:
            self.sync()

    def sync(self) -> None:
        """Move the metrics by what changed since the last sync; on the loop thread only."""
        self._synced_at = time.monotonic()
        counts, synced = self._counts, self._synced
        for key, counter in self._counted.items():
            value = counts.get(key, 0)
            if value != synced[key]:
                counter.inc(value - synced[key])
                synced[key] = value
        reconnects: int = getattr(self._connection, "reconnects", 0)  # a Bus may not count them
        if reconnects != self._reconnects_synced:
            self._reconnects.inc(reconnects - self._reconnects_synced)
            self._reconnects_synced = reconnects
        view = self._view
        by_state = view.tasks_by_state
        # A subsystem's series live while it has tasks or beats: one long gone leaves /metrics.
        alive = {s for s in self._liveness.seen if self._liveness.state(s) == "alive"}
        keep = {subsystem for subsystem, _ in by_state} | alive | self._pinned
        for subsystem in keep - self._subsystems:
            self._add_subsystem(subsystem)
        for subsystem in self._subsystems - keep:
            self._drop_subsystem(subsystem)
        for series, gauge in self._task_series.items():
            gauge.set(by_state.get(series, 0))
        self._tombstones.set(len(view.tombstones))
        self._revision.set(view.revision)
        if self._shared_log:
            self._sync_lag(view.revision)

    def _add_subsystem(self, subsystem: str) -> None:
        self._subsystems.add(subsystem)
        for state in State:
            self._task_series[subsystem, state] = self._tasks.labels(subsystem, state.value)

    def _drop_subsystem(self, subsystem: str) -> None:
        self._subsystems.discard(subsystem)
        for state in State:
            del self._task_series[subsystem, state]
            self._tasks.remove(subsystem, state.value)

    def _sync_lag(self, revision: int) -> None:
        # The rows of Host.getAggregators: serving, heard recently; this one first.
        others = self._replicas.listing(revision=revision, tasks=len(self._view))[1:]
        serving: dict[str, int] = {}
        for row in others:
            serving[row["name"]] = max(row["revision"], serving.get(row["name"], 0))
        for name in self._lagging - serving.keys():
            self._lag.remove(name)
        for name, theirs in serving.items():
            self._lag.labels(name).set(revision - theirs)
        self._lagging = set(serving)
