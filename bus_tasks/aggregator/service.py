"""The service loop: one thread drains one connection; the parts do the work.

Events go to :mod:`~bus_tasks.aggregator.ingest`, requests (:mod:`~bus_tasks.aggregator.requests`)
to the method table of :mod:`~bus_tasks.aggregator.methods`, stop and revert through
:mod:`~bus_tasks.aggregator.relay`; :mod:`~bus_tasks.aggregator.retention` expires old tasks.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace

from bus_tasks import codec, config, names, transport
from bus_tasks.aggregator import methods
from bus_tasks.aggregator.changes import DEFAULT_HISTORY, ChangeFeed
from bus_tasks.aggregator.clears import Clears
from bus_tasks.aggregator.ingest import Ingest, StoreHealth
from bus_tasks.aggregator.liveness import Liveness
from bus_tasks.aggregator.metrics import Metrics
from bus_tasks.aggregator.policy import ADMIT_ALL, CallPolicy, Policies
from bus_tasks.aggregator.presence import Presence
from bus_tasks.aggregator.relay import ControlRelay
from bus_tasks.aggregator.replicas import Replicas
from bus_tasks.aggregator.requests import Requests
from bus_tasks.aggregator.retention import Retention
from bus_tasks.aggregator.testtasks import DEFAULT_TEST_SUBSYSTEM, TestTaskOwner
from bus_tasks.config import redact_url
from bus_tasks.core.view import Entry, TaskView
from bus_tasks.errors import BrokerUnavailable, GeneralError, StoreUnavailable
from bus_tasks.identity import OFF, TrustPolicy
from bus_tasks.protocol import control, shapes
from bus_tasks.store import NullStore, Store
from bus_tasks.transport import Bus, ShutdownRequested

log = logging.getLogger(__name__)

# A resync request older than this is moot: the subsystem announces itself when it starts.
RESYNC_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class AggregatorPolicy:
    """Limits and timings of one aggregator."""

    prefetch_count: int = config.DEFAULT_PREFETCH_COUNT
    ack_batch: int = 128
    max_event_bytes: int = config.DEFAULT_MAX_EVENT_BYTES
    max_request_bytes: int = config.DEFAULT_MAX_REQUEST_BYTES
    max_reply_bytes: int = config.DEFAULT_MAX_REPLY_BYTES
    max_batch_calls: int = config.DEFAULT_MAX_BATCH_CALLS
    done_ttl_s: float | None = config.DEFAULT_DONE_TTL_S
    tombstone_ttl_s: float = config.DEFAULT_TOMBSTONE_TTL_S
    expire_every_s: float = 60.0
    # The subsystem of injected test tasks, which this aggregator owns; "" for none.
    test_subsystem: str = DEFAULT_TEST_SUBSYSTEM
    # This aggregator's name among several (bus-tasks aggregators); the host's name when "".
    name: str = ""
    beat_s: float = 5.0  # how often it says it serves
    watch_history: int = DEFAULT_HISTORY  # changes kept for watchers' replays
    # Whom it believes (SPEC 15); its test subsystem's tasks are the aggregators' own.
    trust: TrustPolicy = OFF


class Aggregator:
    """Keeps the merged view of every task and serves it over the request/reply queue."""

    def __init__(
        self,
        connection: Bus,
        *,
        view: TaskView | None = None,
        store: Store | None = None,
        policy: AggregatorPolicy | None = None,
        call_policy: CallPolicy = ADMIT_ALL,
        front_doors: frozenset[str] | None = None,
    ) -> None:
        """Args:
        call_policy: sees every RPC call before its method runs (e.g. who may call what), and
            how each was served; the aggregator's metrics are told too (see aggregator/policy).
        front_doors: the identities whose calls for their clients are believed (SPEC 16: the
            client's identity, the door); None: such calls are the sender's own, unread.
        """
        self.connection = connection
        self.view = view if view is not None else TaskView(shapes.task_details_member)
        self.store = store if store is not None else NullStore()
        self.policy = policy or AggregatorPolicy()
        self.counts: Counter[str] = Counter()
        self.ready = threading.Event()
        self.connected = threading.Event()  # serving on a live connection (read by /healthz)
        test_subsystem = self.policy.test_subsystem
        owned = {test_subsystem: "bus-tasks serve (test tasks)"} if test_subsystem else {}
        self.liveness = Liveness(owned=owned)
        self.replicas = Replicas(self.policy.name or socket.gethostname(), beat_s=self.policy.beat_s)
        trust = replace(self.policy.trust, test_subsystem=test_subsystem)
        self.presence = Presence(self.liveness, self.replicas, self.view, self.counts, trust=trust)
        self.metrics = Metrics(
            counts=self.counts,
            view=self.view,
            connection=connection,
            liveness=self.liveness,
            replicas=self.replicas,
            subsystems=owned,
        )
        self._next_beat = 0.0
        self.feed = ChangeFeed(
            connection,
            name=self.replicas.name,
            instance=self.replicas.instance,
            log_name=_log_name(connection, self.replicas.instance),
            history=self.policy.watch_history,
            beat_s=self.policy.beat_s,
            max_message_bytes=self.policy.max_reply_bytes,
        )
        self.test_tasks = TestTaskOwner(connection, test_subsystem, self.view) if test_subsystem else None
        if self.test_tasks is not None:
            self.test_tasks.control.trust = trust
        self.ingest = Ingest(
            connection,
            self.view,
            self.store,
            self.counts,
            max_event_bytes=self.policy.max_event_bytes,
            ack_batch=self.policy.ack_batch,
            feed=self.feed,
            log_offsets=connection.topology.uses_stream,
            on_gap=self._on_gap,
            on_commit=self.metrics.store_committed,
            trust=trust,
        )
        self.health = self.ingest.health
        self.call_policy = Policies(call_policy, self.metrics)
        self.relay = ControlRelay(
            connection,
            self.counts,
            policy=self.call_policy,
            trust=trust,
            max_reply_bytes=self.policy.max_reply_bytes,
        )
        self.clears = Clears(connection, self.ingest, self.relay, self.counts)
        self.retention = Retention(
            self.view,
            self.ingest,
            self.clears,
            done_ttl_s=self.policy.done_ttl_s,
            tombstone_ttl_s=self.policy.tombstone_ttl_s,
            every_s=self.policy.expire_every_s,
        )
        self.dispatcher = methods.Dispatcher(
            self.view,
            on_clear=self._on_clear,
            check_writable=self._check_writable,
            subsystems=lambda: self.liveness.listing(self.view.count_by_subsystem()),
            aggregators=lambda: self.replicas.listing(revision=self.view.revision, tasks=len(self.view)),
            feed=self.feed,
            policy=self.call_policy,
            max_reply_bytes=self.policy.max_reply_bytes,
        )
        self.metrics.add_methods(self.dispatcher.methods)
        self.requests = Requests(
            self.dispatcher,
            self.relay,
            self.ingest,
            self.counts,
            max_request_bytes=self.policy.max_request_bytes,
            max_batch_calls=self.policy.max_batch_calls,
            front_doors=front_doors,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> bool:
        """Load the store, bind the event queue, then start serving RPC; logs one ready line.

        Returns False when ``stop`` was set before it was ready (then nothing is consumed).

        Raises:
            StoreUnusable: when the store can never be loaded as it is.
        """
        stop = stop if stop is not None else threading.Event()
        log.info("loading the view from %s", self.store)
        loaded = self._load(stop)
        if loaded is None:
            return False
        log.info("loaded %d tasks and %d tombstones from %s", loaded, len(self.view.tombstones), self.store)
        if stop.is_set():
            return False
        self.feed.start(self.view.revision)
        connection = self.connection
        connection.topology.declare_topology()
        source = connection.topology.events_source
        if connection.topology.uses_stream:
            # Every aggregator reads the whole log from its own position: it catches up alone.
            connection.consume(
                source,
                self.ingest.on_event,
                prefetch=self.policy.prefetch_count,
                replay_from=self.ingest.start_offset,
            )
        else:
            admin = transport.admin(connection)
            others = admin.consumer_count(source) if admin is not None else None
            if others:
                # Competing consumers: each would get part of the events, answer from part of the view.
                log.warning(
                    "another aggregator (%d consumer(s)) already reads %s on %r: give each aggregator"
                    " a name of its own (aggregator_name), or both views will miss events",
                    others,
                    source,
                    connection,
                )
            # Events first: an event published once RPC answers must already have a queue.
            connection.consume(source, self.ingest.on_event, prefetch=self.policy.prefetch_count)
        connection.consume(connection.topology.declare_presence_queue(), self.presence.on_beat, no_ack=True)
        self.relay.start()
        if self.test_tasks is not None:
            self.test_tasks.listen(connection)
        connection.consume(names.RPC_QUEUE, self.requests.on_request, prefetch=64)
        self.replicas.rpc_queue = connection.topology.declare_replica_queue(names.REPLICA_RPC_PREFIX)
        self.feed.rpc_queue = self.replicas.rpc_queue
        connection.consume(self.replicas.rpc_queue, self.requests.on_request, prefetch=64)
        if not connection.topology.uses_stream:
            # Its own queue holds only what came since it was declared: the subsystems fill in.
            self.request_resync()
        self._beat()
        log.info(
            "aggregator ready on %r as %s: %d tasks loaded from %s, reading %s from revision %d",
            connection,
            self.replicas.name,
            loaded,
            self.store,
            source,
            self.view.revision,
        )
        self.connected.set()
        self.ready.set()
        return True

    def _load(self, stop: threading.Event) -> int | None:
        """Load the store, retrying with back-off while it is unavailable; None if stopped first."""
        health = StoreHealth(self.store, first_retry_s=0.5)
        while True:
            try:
                loaded = self.store.load(self.view)
            except StoreUnavailable as exc:
                health.failed(exc, held=0)
                if stop.wait(health.wait_s()):
                    return None
                continue
            health.succeeded()
            return loaded

    def _on_gap(self, expected: int, first: int) -> None:
        """The stream no longer holds what this aggregator missed: the last resort, a resync."""
        log.warning(
            "the event log starts at offset %d, after the %d this view needs (retention dropped"
            " %d events it never read): asking the subsystems to resync",
            first,
            expected,
            first - expected,
        )
        self.counts["log_gaps"] += 1
        self.request_resync()

    def _beat(self, *, stopped: bool = False) -> None:
        """Say this aggregator serves (``bus-tasks aggregators``), every ``beat_s``."""
        beat = self.replicas.beat(revision=self.view.revision, tasks=len(self.view), stopped=stopped)
        self.feed.publish(self.view.revision, beat=True, stopped=stopped)
        self.connection.publish(
            codec.dumps(beat.to_wire()),
            exchange=names.EVENTS_EXCHANGE,
            routing_key=names.replica_beat_routing_key(self.replicas.name),
            persistent=False,
            expiration_s=3 * self.policy.beat_s,
        )
        self._next_beat = time.monotonic() + self.policy.beat_s

    def request_resync(self) -> None:
        """Ask every listening subsystem to re-announce its live tasks, so the view heals."""
        self.connection.publish(
            control.resync_notice(),
            exchange=names.CONTROL_EXCHANGE,
            routing_key=names.CONTROL_BROADCAST,
            expiration_s=RESYNC_TTL_S,
        )

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; reconnects when the broker connection drops.

        Raises:
            StoreUnusable: when the store can never be loaded as it is.
            BrokerUnavailable: when the broker refuses what serving needs (not a lost connection:
                that is recovered from).
        """
        try:
            if self.start(stop):
                while not stop.is_set():
                    self.step()
        except ShutdownRequested as exc:
            log.warning("%s", exc)  # the broker was away when the stop came: leave anyway
        except self.connection.errors as exc:  # e.g. a queue declared with other arguments
            raise BrokerUnavailable(redact_url(self.connection.url), str(exc)) from exc
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Store and ack what can be, then close; never raises for a broker or store that is away."""
        ingest = self.ingest
        try:
            if self.ready.is_set():
                self._beat(stopped=True)  # the others stop listing it at once
            ingest.flush(force=True)
        except (ShutdownRequested, *self.connection.errors) as exc:  # type: ignore[misc]
            log.warning("stopping without acking %d events (they come again): %s", len(ingest.unacked), exc)
        finally:
            if self.health.failing is not None:
                log.warning(
                    "stopping with the store unavailable: %d events not stored, none acked",
                    len(ingest.unacked),
                )
            ingest.forget_unacked()
            self.store.close()
            self.connection.close()
        self.metrics.sync()  # the last figures, for a scrape after the stop
        handled = ", ".join(f"{what} {n}" for what, n in sorted(self.counts.items()) if n)
        log.info("aggregator stopped: %s", handled or "nothing was received")

    def step(self, timeout_s: float = 0.2) -> None:
        """Process what arrives within ``timeout_s``; flush acks when the queue is idle."""
        ingest = self.ingest
        try:
            got = self.connection.drain(self.relay.wait_s(ingest.wait_s(timeout_s)))
            # Watchers hear of a change as soon as it is applied (a change not yet stored comes
            # again after a crash, from the same event at the same revision); in a flood, every
            # COALESCE_S (see aggregator/changes.py).
            self.feed.publish_due(self.view.revision, idle=not got)
            if not got or not self.health.due():
                ingest.flush()
            self.relay.time_out()
            self.relay.send_again()  # after a recovery: answers may have gone with the old node
            self.retention.tick()
            self.metrics.tick()
            if time.monotonic() >= self._next_beat:
                self._beat()
                self.replicas.forget_gone()
        except self.connection.errors:
            ingest.forget_unacked()  # unacked deliveries come back after a reconnect
            self.connected.clear()
            self.connection.recover()
            self.relay.recovered()
            self.connected.set()

    def _check_writable(self) -> None:
        """Refuse a clear while the store fails: it would be forgotten by a restart."""
        if self.health.failing is not None:
            raise GeneralError(
                message=f"General Exception: the view cannot be changed now: {self.health.failing}"
            )

    def _on_clear(self, entry: Entry) -> None:
        """A task was cleared through RPC: stored, published to every aggregator, its owner told."""
        self.clears.spread([entry], self.view.tombstones, why="cleared")


def _log_name(connection: Bus, instance: str) -> str:
    """Which log revisions count in: the stream is one log for every replica; a replica's own
    queue counts its deliveries since this process started, a log of its instance alone."""
    source = connection.topology.events_source
    return source if connection.topology.uses_stream else f"{source}@{instance}"
