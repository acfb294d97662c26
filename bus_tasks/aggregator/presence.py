"""Presence: heartbeats of subsystems and of aggregators, on each aggregator's private queue.

They are not history, so they stay out of the event log: a new aggregator learns who is alive
within one interval, and the log does not grow by a heartbeat every few seconds.
"""

from __future__ import annotations

import logging
from collections import Counter

from bus_tasks import names
from bus_tasks.aggregator.liveness import Liveness
from bus_tasks.aggregator.replicas import Replicas
from bus_tasks.core.model import ReplicaBeat, decode_heartbeat, decode_replica_beat
from bus_tasks.core.view import TaskView
from bus_tasks.errors import EventRejected
from bus_tasks.identity import OFF, Speech, TrustPolicy, refusal
from bus_tasks.transport import Delivery

log = logging.getLogger(__name__)

_AGGREGATOR_PREFIX = names.AGGREGATOR_BEATS.removesuffix("#")


class Presence:
    """Turns heartbeats into the tables of ``Host.getSubsystems`` and ``Host.getAggregators``."""

    def __init__(
        self,
        liveness: Liveness,
        replicas: Replicas,
        view: TaskView,
        counts: Counter[str],
        *,
        trust: TrustPolicy = OFF,
    ) -> None:
        self.trust = trust  # whose beats are believed (SPEC 15)
        self.liveness = liveness
        self.replicas = replicas
        self.view = view
        self.counts = counts

    def on_beat(self, delivery: Delivery) -> None:
        """One heartbeat (no ack: presence is not kept); a bad one is counted and logged."""
        try:
            if delivery.routing_key.startswith(_AGGREGATOR_PREFIX):
                beat = decode_replica_beat(delivery.body)
                self._believe(Speech.PRESENCE, None, delivery)
                self._same_name(beat)
                self.replicas.hear(beat)
            else:
                self._subsystem(delivery)
        except EventRejected as exc:
            self.counts["heartbeats_rejected"] += 1
            log.warning("heartbeat rejected key=%r: %r", delivery.routing_key, exc.reason)

    def _same_name(self, beat: ReplicaBeat) -> None:
        """Two aggregators of one name are listed alike (``bus-tasks aggregators``): say so once."""
        mine = self.replicas
        other = beat.instance != mine.instance and beat.instance not in mine.heard
        if other and beat.name == mine.name and beat.state != "stopped":
            log.warning(
                "another aggregator serves as %r (instance %s, started %s): both are listed"
                " under that name; give each its own aggregator_name",
                beat.name,
                beat.instance,
                beat.started_at.isoformat(timespec="seconds"),
            )

    def _believe(self, speech: Speech, subsystem: str | None, delivery: Delivery) -> None:
        reason = refusal(self.trust, speech, subsystem, delivery.user_id)
        if reason is not None:
            self.counts["heartbeats_refused_identity"] += 1
            raise EventRejected(reason)

    def _subsystem(self, delivery: Delivery) -> None:
        heartbeat = decode_heartbeat(delivery.body)
        self._believe(Speech.HEARTBEAT, heartbeat.subsystem, delivery)
        if heartbeat.state == "stopped":
            log.info("subsystem %s (%s) stopped", heartbeat.subsystem, heartbeat.instance)
        elif heartbeat.subsystem not in self.liveness.seen:
            log.info("subsystem %s (%s) is alive", heartbeat.subsystem, heartbeat.instance)
        self.liveness.beat(heartbeat)
        # Ages of done tasks count in the time the bus carries (see Retention).
        self.view.note_time(heartbeat.sent_at.timestamp())
        self.counts["heartbeats"] += 1
