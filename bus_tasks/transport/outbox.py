"""Publisher confirms as a pure state machine: what waits to be sent, what waits for the broker.

No I/O here. The connection sends the head message and reports it sent; the broker's acks and
nacks come in by delivery tag; a lost connection puts everything unconfirmed back in line.
Callbacks of confirmed messages are never run here: :meth:`Outbox.ack` returns them, so that
the loop owning the connection runs them when no send or wait is in progress.

A message the broker could not route (published ``mandatory``) comes back in a basic.return,
which RabbitMQ sends before its confirm: :meth:`Outbox.returned` marks it, its ack then settles
it as :class:`Returned` (its callback dropped), and :meth:`Outbox.take_returned` hands the
record to whoever reports it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Callback = Callable[[], None]


@dataclass(slots=True)
class Outgoing:
    """A message on its way: kept until the broker confirms it, re-sent after a reconnect."""

    body: bytes
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    reply_to: str | None
    correlation_id: str | None
    expiration_s: float | None
    persistent: bool
    on_confirm: Callback | None = None
    returned: str | None = None  # why the broker returned it, until its confirm settles it
    refusals: int = 0  # nacks in a row on this channel (others' acks do not end the run)


@dataclass(frozen=True, slots=True)
class Returned:
    """A message the broker confirmed without delivering it anywhere (basic.return)."""

    exchange: str
    routing_key: str
    reason: str  # e.g. "312 NO_ROUTE"


class Outbox:
    """Messages between ``publish`` and the broker's confirm, in publish order.

    Delivery tags count from 1 on every channel: call :meth:`lost` when the channel is gone,
    and the next message sent gets tag 1 again.
    """

    def __init__(self) -> None:
        self._unsent: deque[Outgoing] = deque()
        self._unconfirmed: dict[int, Outgoing] = {}  # delivery tag -> message, in tag order
        self._next_tag = 1
        self._acked_up_to = 0  # the highest tag confirmed on the current channel
        self._returned: list[Returned] = []
        self._refused: list[Returned] = []

    def __len__(self) -> int:
        """Messages not yet confirmed (sent or not)."""
        return len(self._unsent) + len(self._unconfirmed)

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    @property
    def unconfirmed(self) -> int:
        """Messages sent on the current channel and not yet confirmed."""
        return len(self._unconfirmed)

    @property
    def overtaken(self) -> bool:
        """A message still unconfirmed was sent before one the broker confirmed since: its
        confirm may never come (a stream or quorum queue whose leader died with it in flight)."""
        unconfirmed = self._unconfirmed
        return bool(unconfirmed) and next(iter(unconfirmed)) < self._acked_up_to

    def add(self, message: Outgoing) -> None:
        """Queue ``message`` behind every message not yet sent."""
        self._unsent.append(message)

    def head(self) -> Outgoing | None:
        """The next message to send, or None."""
        return self._unsent[0] if self._unsent else None

    def sent(self) -> int:
        """The head message went out on the channel: it now waits for its confirm. Returns its tag.

        Raises:
            LookupError: when nothing waits to be sent.
        """
        if not self._unsent:
            raise LookupError("no message waits to be sent")
        tag = self._next_tag
        self._unconfirmed[tag] = self._unsent.popleft()
        self._next_tag += 1
        return tag

    def ack(self, delivery_tag: int, *, multiple: bool = False) -> list[Callback]:
        """The broker confirmed ``delivery_tag`` (and every earlier one with ``multiple``).

        Returns the callbacks of the confirmed messages, in order, for the caller to run; a
        message returned before its confirm is recorded for :meth:`take_returned` instead.
        """
        callbacks = []
        self._acked_up_to = max(self._acked_up_to, delivery_tag)
        for tag in self._tags(delivery_tag, multiple):
            message = self._unconfirmed.pop(tag)
            if message.returned is not None:
                self._returned.append(Returned(message.exchange, message.routing_key, message.returned))
            elif message.on_confirm is not None:
                callbacks.append(message.on_confirm)
        return callbacks

    def returned(self, exchange: str, routing_key: str, body: bytes, reason: str) -> bool:
        """The broker returned a message it could not route; its confirm follows.

        Marks the earliest unconfirmed message of that exchange, routing key and body (a return
        names no delivery tag). One that matches none (published without confirms) is recorded
        at once. Returns whether one matched.
        """
        for message in self._unconfirmed.values():
            if (
                message.returned is None
                and message.routing_key == routing_key
                and message.exchange == exchange
                and message.body == body
            ):
                message.returned = reason
                return True
        self._returned.append(Returned(exchange, routing_key, reason))
        return False

    def take_returned(self) -> list[Returned]:
        """The returned messages settled since the last call, in order; forgets them."""
        returned, self._returned = self._returned, []
        return returned

    def nack(self, delivery_tag: int, *, multiple: bool = False) -> list[Outgoing]:
        """The broker refused these messages: they go back to the front of the line, in order,
        each with one more refusal counted. Returns them."""
        refused = [self._unconfirmed.pop(tag) for tag in self._tags(delivery_tag, multiple)]
        for message in refused:
            message.returned = None  # sent again, it is routed afresh
            message.refusals += 1
        self._unsent.extendleft(reversed(refused))
        return refused

    def refuse(self, refused: Callable[[Outgoing], bool], reason: str) -> list[Outgoing]:
        """The broker refused for good the messages ``refused`` picks (sent or not): they leave
        the line, never to be re-sent, and are recorded for :meth:`take_refused`. Returns them."""
        gone = [m for m in (*self._unconfirmed.values(), *self._unsent) if refused(m)]
        if gone:
            self._unconfirmed = {t: m for t, m in self._unconfirmed.items() if not refused(m)}
            self._unsent = deque(m for m in self._unsent if not refused(m))
            self._refused.extend(Returned(m.exchange, m.routing_key, reason) for m in gone)
        return gone

    def take_refused(self) -> list[Returned]:
        """The messages refused since the last call, in order; forgets them."""
        refused, self._refused = self._refused, []
        return refused

    def lost(self) -> int:
        """The channel is gone: every message not confirmed is to be sent again, in order.

        Their callbacks are dropped: they belong to the lost connection (e.g. acks of its
        deliveries, which come again on the next one). Returns how many messages wait.
        """
        line = [*self._unconfirmed.values(), *self._unsent]
        for message in line:
            message.on_confirm = None
            message.returned = None  # sent again, it is routed afresh
            message.refusals = 0  # a new channel, maybe to another node: a new run
        self._unsent = deque(line)
        self._unconfirmed.clear()
        self._next_tag = 1
        self._acked_up_to = 0
        return len(line)

    def _tags(self, delivery_tag: int, multiple: bool) -> list[int]:
        if not multiple:
            return [delivery_tag] if delivery_tag in self._unconfirmed else []
        # Tags are inserted in increasing order: stop at the first one past delivery_tag.
        tags = []
        for tag in self._unconfirmed:
            if tag > delivery_tag:
                break
            tags.append(tag)
        return tags
