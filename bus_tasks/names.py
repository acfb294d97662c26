"""Every exchange, queue, routing key and header name on the bus, spelled once."""

from __future__ import annotations

EVENTS_EXCHANGE = "bus_tasks.events"
EVENTS_BINDING = "task.#"
# On RabbitMQ, the event log: a stream bound to the events exchange, read by every aggregator
# from its own offset (the revision).
EVENT_LOG = "bus_tasks.events.log"
# Elsewhere (Redis, memory://, or RabbitMQ with event_log = "queue"), each aggregator's own
# durable queue: this one for an aggregator without a name, "<this>.<name>" for a named one.
EVENTS_QUEUE = "bus_tasks.aggregator.events"

# Presence, not history: heartbeats of subsystems and aggregators go to the events exchange with
# these keys (outside the log), to a private queue of each aggregator.
SUBSYSTEM_BEATS = "subsystem.#"
AGGREGATOR_BEATS = "aggregator.#"
PRESENCE_QUEUE_PREFIX = "bus_tasks.presence."
# Each aggregator also answers requests addressed to it alone (bus-tasks aggregators, tests).
REPLICA_RPC_PREFIX = "bus_tasks.rpc.replica."
# On RabbitMQ, a subsystem's claim of its name: an exclusive queue its connection holds.
CLAIM_PREFIX = "bus_tasks.claim."

RPC_QUEUE = "bus_tasks.rpc"

# Every change an aggregator applies, published once (docs/watching.md): a topic exchange, routing
# key ``changes.<aggregator name>``; each watcher binds a private queue of its own to it.
CHANGES_EXCHANGE = "bus_tasks.changes"
CHANGES_BINDING = "changes.#"
WATCH_QUEUE_PREFIX = "bus_tasks.watch."

CONTROL_EXCHANGE = "bus_tasks.control"
CONTROL_REPLY_PREFIX = "bus_tasks.control.reply."
REPLY_QUEUE_PREFIX = "bus_tasks.reply."

# Control commands addressed to every subsystem (resync) use this routing key; it cannot be
# a subsystem name.
CONTROL_BROADCAST = "*"

DEAD_QUEUE = "bus_tasks.dead"

HEADER_REASON = "x-bus-tasks-reason"
HEADER_SENT_AT = "x-bus-tasks-sent-at"
# A front door's call for its client (SPEC 16): the door ("stomp", "http") and the client's
# identity (absent: anonymous); believed only from a user_id in front_doors.
HEADER_DOOR = "x-bus-tasks-door"
HEADER_ON_BEHALF_OF = "x-bus-tasks-on-behalf-of"
# A request its caller sent before and sends again after a failover (SPEC 17): the aggregator
# forwards a repeated stop or revert to the owner, which answers a repeat from memory.
HEADER_RESENT = "x-bus-tasks-resent"
# On a cleared event: the call that cleared the task, so that a repeat of it finds its tombstone.
HEADER_CLEARED_BY = "x-bus-tasks-cleared-by"
HEADER_STREAM_OFFSET = "x-stream-offset"  # set by RabbitMQ on every message read from a stream

CONTENT_TYPE = "application/json"


def event_routing_key(subsystem: str, event: str) -> str:
    """Routing key of an event: ``task.<subsystem>.<event>``."""
    return f"task.{subsystem}.{event}"


def heartbeat_routing_key(subsystem: str) -> str:
    """Routing key of a subsystem's heartbeat: ``subsystem.<name>.heartbeat`` (not in the log)."""
    return f"subsystem.{subsystem}.heartbeat"


def replica_beat_routing_key(name: str) -> str:
    """Routing key of an aggregator's heartbeat: ``aggregator.<name>.beat``."""
    return f"aggregator.{name}.beat"


def changes_routing_key(name: str) -> str:
    """Routing key of an aggregator's change feed: ``changes.<name>``."""
    return f"changes.{name}"


def events_queue(replica: str = "") -> str:
    """The events queue of an aggregator named ``replica`` (off the stream)."""
    return f"{EVENTS_QUEUE}.{replica}" if replica else EVENTS_QUEUE


def control_queue(subsystem: str) -> str:
    """The queue on which one subsystem receives control commands for its tasks."""
    return f"bus_tasks.control.{subsystem}"


# -- Redis store of the view (RedisStore); every key is under the configured store_key_prefix --

# Hash: task id -> 20-digit zero-padded seq, ":", then the task's TaskDetails JSON.
STORE_TASKS_KEY = "tasks"
# Hash: task id -> tombstone JSON {"subsystem", "seq", "cleared_at"}.
STORE_TOMBSTONES_KEY = "tombstones"
# Hash: "form" -> the stored form of the tasks hash (bus_tasks.store.form.STORED_FORM).
STORE_META_KEY = "meta"
