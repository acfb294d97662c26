"""The aggregator's per-event ingest path in one process, without a broker or a socket: not a
figure, a tool behind ``tls_ingest`` (issue 23), steadier than the figure on a shared machine.

``python -m bench.ingest_path [--tasks N] [--reps N]``

The events of ``ingest`` (three a task) as RabbitMQ sends them to a stream consumer (method,
content header and body frames; ``user_id`` and ``x-stream-offset`` set), read from a fake
non-blocking socket in 16 KiB chunks (a TLS record's most) by ``frames.read_ready`` into
py-amqp's frame handler and a channel of py-amqp's (not connected), handed by the consumer's
``DirectReceiver`` to an ``Inbox`` and then to ``Ingest.on_event`` (identity ``"broker"``,
the default SQLite store in a temp dir, committed and acked every 128 events, the change feed
published once a turn to a publisher that drops it). What a deployment pays besides: TLS, the
system calls, the broker's connection. Prints the CPU per event of each repetition
(``time.process_time``). Under ``valgrind --tool=callgrind`` the difference of two sizes gives
instructions per event, which the load of the machine does not move (docs/performance.md).
"""

from __future__ import annotations

import argparse
import gc
import struct
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import amqp
from amqp.method_framing import frame_handler
from amqp.serialization import dumps

from bench import workload
from bus_tasks import names
from bus_tasks.aggregator.changes import ChangeFeed
from bus_tasks.aggregator.ingest import Ingest
from bus_tasks.config import Settings
from bus_tasks.core.view import TaskView
from bus_tasks.identity import TrustPolicy
from bus_tasks.store import open_store
from bus_tasks.transport import Delivery
from bus_tasks.transport.kombu import frames
from bus_tasks.transport.kombu.connection import DRAIN_BATCH
from bus_tasks.transport.kombu.consumers import DirectReceiver, Inbox
from bus_tasks.workers.wiring import SERVE_GC_THRESHOLD

CHUNK_BYTES = 16384  # what one SSL read returns at most
CONSUMER_TAG = "ctag"
AGGREGATOR = "agg1"


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([frames.FRAME_END])


def stream_of(n_tasks: int) -> tuple[bytes, int]:
    """The deliveries of ``n_tasks`` tasks' events on channel 1, as the broker sends them; and their count."""
    out = []
    for offset, (key, body) in enumerate(workload.bodies(n_tasks)):
        arguments = dumps("sLbss", [CONSUMER_TAG, offset + 1, False, names.EVENTS_EXCHANGE, key])
        properties = amqp.Message(
            body,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            priority=0,
            user_id=workload.SUBSYSTEM,
            application_headers={names.HEADER_STREAM_OFFSET: offset},
        )._serialize_properties()
        header = struct.pack(">HHQ", 60, 0, len(body)) + properties
        out.append(
            frame(1, 1, struct.pack(">HH", 60, 60) + arguments) + frame(2, 1, header) + frame(3, 1, body)
        )
    return b"".join(out), len(out)


class Socket:
    """Non-blocking: gives ``data`` a chunk a read, then has nothing more."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def gettimeout(self) -> float | None:
        return None

    def settimeout(self, timeout: float | None) -> None:
        pass

    def recv(self, size: int) -> bytes:
        if self.at >= len(self.data):
            raise BlockingIOError
        chunk = self.data[self.at : self.at + min(size, CHUNK_BYTES)]
        self.at += len(chunk)
        return chunk


class Transport:
    def __init__(self, data: bytes) -> None:
        self.sock = Socket(data)
        self._read_buffer = b""
        self.connected = True


class Channel(amqp.Channel):  # type: ignore[misc]
    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        pass


class Bus:
    """What ingest and the feed use of a connection: acks go to the channel, publishes nowhere."""

    def ack_all(self, deliveries: list[Delivery]) -> None:
        deliveries[-1].ack(multiple=True)

    def publish(self, body: bytes, **_: Any) -> None:
        pass

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        raise AssertionError(f"dead letter: {reason}")


def one_reading(data: bytes, count: int) -> float:
    """CPU seconds per event of one reading of ``data`` (``count`` events) by a new aggregator's path."""
    with tempfile.TemporaryDirectory(prefix="bus_tasks_ingest_path_") as data_dir:
        connection = amqp.Connection(host="localhost:1")  # never connected
        connection._transport = Transport(data)
        connection.on_inbound_frame = frame_handler(connection, connection.on_inbound_method)
        channel = Channel(connection, channel_id=1, auto_decode=False)
        connection.channels[1] = channel
        bus: Any = Bus()
        view = TaskView()
        store = open_store(Settings(data_dir=Path(data_dir)))
        feed = ChangeFeed(bus, name=AGGREGATOR, instance="i", log_name=names.EVENT_LOG)
        trust = TrustPolicy.of("broker", aggregators=[AGGREGATOR])
        ingest = Ingest(
            bus,
            view,
            store,
            Counter(),
            max_event_bytes=1 << 16,
            ack_batch=128,
            feed=feed,
            log_offsets=True,
            trust=trust,
        )
        inbox = Inbox()
        on_delivery = partial(inbox.put, ingest.on_event)
        channel.callbacks[CONSUMER_TAG] = DirectReceiver(
            on_delivery, lambda: False, no_ack=False, kombus_own=print
        )
        cpu_at = time.process_time()
        while view.revision < count:  # the loop's turn: read what is there, handle it, flush, publish
            frames.read_ready(connection, lambda: len(inbox) < DRAIN_BATCH)
            if not inbox.run():  # read_ready read all there was: nothing more will come
                raise RuntimeError(f"read to revision {view.revision} of {count}")
            ingest.flush()
            feed.publish(view.revision)
        cpu_s = time.process_time() - cpu_at
        store.close()
    return cpu_s / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_path", description=__doc__)
    parser.add_argument("--tasks", type=int, default=4_000, help="tasks of three events each")
    parser.add_argument("--reps", type=int, default=5, help="readings (0: only build the stream)")
    args = parser.parse_args(argv)
    data, count = stream_of(args.tasks)
    before = gc.get_threshold()
    gc.set_threshold(*SERVE_GC_THRESHOLD)  # as serve runs the aggregator
    try:
        per_event = [one_reading(data, count) for _ in range(args.reps)]
    finally:
        gc.set_threshold(*before)
    if per_event:
        shown = ", ".join(f"{s * 1e6:.1f}" for s in per_event)
        print(f"{count:,} events: CPU {min(per_event) * 1e6:.1f} us/event at best ({shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
