"""Every exchange, queue, routing key and header name on the bus, spelled once."""

from __future__ import annotations

EVENTS_EXCHANGE = "bus_tasks.events"
EVENTS_QUEUE = "bus_tasks.aggregator.events"
EVENTS_BINDING = "task.#"

RPC_QUEUE = "bus_tasks.rpc"

CONTROL_EXCHANGE = "bus_tasks.control"
CONTROL_REPLY_PREFIX = "bus_tasks.control.reply."
REPLY_QUEUE_PREFIX = "bus_tasks.reply."

# Control commands addressed to every subsystem (resync) use this routing key; it cannot be
# a subsystem name.
CONTROL_BROADCAST = "*"

DEAD_QUEUE = "bus_tasks.dead"

HEADER_REASON = "x-bus-tasks-reason"
HEADER_SENT_AT = "x-bus-tasks-sent-at"
HEADER_STREAM_OFFSET = "x-stream-offset"  # set by RabbitMQ on every message read from a stream

CONTENT_TYPE = "application/json"


def event_routing_key(subsystem: str, event: str) -> str:
    """Routing key of an event: ``task.<subsystem>.<event>``."""
    return f"task.{subsystem}.{event}"


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
