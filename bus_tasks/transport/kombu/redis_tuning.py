"""kombu's Redis transport with fewer round trips per message; :class:`~.link.Link` uses it for
``redis://`` and ``rediss://``.

kombu emulates acks on Redis: each delivery is recorded in an ``unacked`` hash and index
(one pipeline round trip) after its ``BRPOP`` (another), and each ack removes it (a third).
This transport keeps that wire format and those guarantees and only groups the round trips:

- after a ``BRPOP`` delivered one message, the rest of what the consumer may take (its
  prefetch room, at most :data:`FETCH_MAX`) is asked for with ``RPOP key count`` in the same
  pipeline that records the first one: a lone message costs the round trips it costs kombu;
- the unacked records of the messages one read delivered go to Redis as one pipeline, before
  any of them is handled (kombu's own window between a pop and its record is not widened past
  one read);
- one ``redis.Redis`` client per channel serves its commands (kombu makes a new one, with its
  table of response callbacks, for every publish and every pipeline);
- :meth:`BatchingQoS.batched` (entered by :func:`~.consumers.acks_batched`) makes the acks of a batch
  (an aggregator acks after each store commit) one pipeline per channel, not a round trip each.

A consumer without acks (``no_ack``: nothing to record) and a channel that consumes more than
one queue read as kombu does. Messages with a priority (bus_tasks sends none) are still served
by the ``BRPOP``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from time import time
from typing import Any

from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

FETCH_MAX = 128  # messages taken by one RPOP after a BRPOP, when the prefetch allows as many


class BatchingQoS(redis.QoS):
    """kombu's ack emulation, whose Redis writes can be grouped into one pipeline (:meth:`batched`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pipe: Any = None

    @contextmanager
    def batched(self) -> Iterator[Any]:
        """Within the block, records and acks are queued in one pipeline (yielded, and sent at
        the end of the outermost block; an empty one costs no round trip)."""
        if self._pipe is not None:  # nested: the outer block sends
            yield self._pipe
            return
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline()
            self._pipe = pipe
            try:
                yield pipe
            finally:
                self._pipe = None
                pipe.execute()  # also after an error: messages popped must be recorded

    def append(self, message: Any, delivery_tag: str) -> None:
        if self._pipe is None:
            super().append(message, delivery_tag)
            return
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        self._pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
        self._pipe.hset(self.unacked_key, delivery_tag, raw)
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if self._pipe is None:
            super().ack(delivery_tag)
            return
        self._remove_from_indices(delivery_tag, self._pipe)
        virtual.QoS.ack(self, delivery_tag)


class Channel(redis.Channel):
    """A Redis channel that takes what its prefetch allows in one more read after a ``BRPOP``."""

    QoS = BatchingQoS

    @cached_property
    def _commands(self) -> Any:
        """The client of this channel's commands (BRPOP has a connection of its own)."""
        return self._create_client()

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client if client else self._commands

    def _disconnect_pools(self) -> None:
        self.__dict__.pop("_commands", None)  # its pool is disconnected: the next one gets a new one
        super()._disconnect_pools()

    def _brpop_read(self, **options: Any) -> bool:
        qos = self.qos
        if not isinstance(qos, BatchingQoS):  # ack_emulation off: kombu's own way
            return bool(super()._brpop_read(**options))
        with qos.batched() as pipe:
            delivered = bool(super()._brpop_read(**options))  # raises Empty on a time-out
            queues = self.active_queues
            if len(pipe) and len(queues) == 1:  # recorded (not no_ack); one queue: the one served
                room = qos.can_consume_max_estimate()
                count = FETCH_MAX if room is None else min(room, FETCH_MAX)
                if count > 0:
                    pipe.rpop(self._q_for_pri(queues[0], 0), count)
                    *_, items = pipe.execute()  # the first message's record and the RPOP: one trip
                    for item in items or ():  # oldest first; each is recorded in the pipeline again
                        self.connection._deliver(loads(bytes_to_str(item)), queues[0])
        return delivered


class Transport(redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
