"""Publisher confirms as a pure state machine: what waits to be sent, what waits for the broker.

No I/O here. The connection sends the head message and reports it sent; the broker's acks and
nacks come in by delivery tag; a lost connection puts everything unconfirmed back in line.
Callbacks of confirmed messages are never run here: :meth:`Outbox.ack` returns them, so that
the loop owning the connection runs them when no send or wait is in progress.
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


class Outbox:
    """Messages between ``publish`` and the broker's confirm, in publish order.

    Delivery tags count from 1 on every channel: call :meth:`lost` when the channel is gone,
    and the next message sent gets tag 1 again.
    """

    def __init__(self) -> None:
        self._unsent: deque[Outgoing] = deque()
        self._unconfirmed: dict[int, Outgoing] = {}  # delivery tag -> message, in tag order
        self._next_tag = 1

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

        Returns the callbacks of the confirmed messages, in order, for the caller to run.
        """
        callbacks = []
        for tag in self._tags(delivery_tag, multiple):
            message = self._unconfirmed.pop(tag)
            if message.on_confirm is not None:
                callbacks.append(message.on_confirm)
        return callbacks

    def nack(self, delivery_tag: int, *, multiple: bool = False) -> int:
        """The broker refused these messages: they go back to the front of the line, in order.

        Returns how many.
        """
        refused = [self._unconfirmed.pop(tag) for tag in self._tags(delivery_tag, multiple)]
        self._unsent.extendleft(reversed(refused))
        return len(refused)

    def lost(self) -> int:
        """The channel is gone: every message not confirmed is to be sent again, in order.

        Their callbacks are dropped: they belong to the lost connection (e.g. acks of its
        deliveries, which come again on the next one). Returns how many messages wait.
        """
        line = [*self._unconfirmed.values(), *self._unsent]
        for message in line:
            message.on_confirm = None
        self._unsent = deque(line)
        self._unconfirmed.clear()
        self._next_tag = 1
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
