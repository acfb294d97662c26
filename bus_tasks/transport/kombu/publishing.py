"""The publishing half of a connection: the producer, publisher confirms, returned messages.

Events go to their exchange ``mandatory``: a message RabbitMQ cannot route comes back
(basic.return, before its confirm) and :meth:`Sender.flush` raises ``PublishError`` for it.
The first publish to the events exchange on a connection (and on every new one after a
reconnect) declares the durable events queue too, so that an event published before any
aggregator ran is kept.

Like the rest of the connection, nothing here runs a handler: the broker's acks, nacks and
returns only update the :class:`~bus_tasks.transport.outbox.Outbox`; confirm callbacks are
queued in the connection's inbox and run by its :meth:`drain`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from kombu.messaging import Producer

from bus_tasks import names
from bus_tasks.config import redact_url
from bus_tasks.errors import PublishError, PublishRefused, PublishUnreachable
from bus_tasks.transport.kombu import refusals
from bus_tasks.transport.kombu.consumers import Inbox
from bus_tasks.transport.kombu.link import Link, Retries, describe
from bus_tasks.transport.kombu.sending import Frames
from bus_tasks.transport.outbox import Outbox, Outgoing, Returned

_EVENT_KEY_PREFIX = names.EVENTS_BINDING.removesuffix("#")  # "task.": what the log keeps
# Nacks in a row of one message after which the connection is replaced: a channel that reached a
# quorum queue while it elected a leader is refused for ~30 s (RabbitMQ 3.10); a new one is served.
NACKS_BEFORE_NEW_CONNECTION = 5
# A message unconfirmed this long while later ones are confirmed is sent again on a new connection:
# its confirm may never come (RabbitMQ 3.10: a stream whose leader was killed with it in flight).
# Long: the broker re-sends a channel's pending stream messages itself once a new leader is up,
# and a new channel made every few seconds during an election may only prolong the stall.
OVERTAKEN_FOR_S = 30.0

log = logging.getLogger("bus_tasks.transport")


class Host(Protocol):
    """What the sender needs of its connection."""

    def recover(self, max_retries: Retries = "default") -> None: ...

    def prepare(self, exchange: str) -> None:
        """Before the first publish to ``exchange`` on a connection: declare what it needs."""
        ...

    @property
    def user_id(self) -> str | None: ...


class Sender:
    """Sends messages on one connection, keeping each one until the broker confirms it (RabbitMQ
    with ``confirming``), at most ``max_unconfirmed``, re-sent after a reconnect or a nack."""

    def __init__(
        self, link: Link, inbox: Inbox, host: Host, *, confirming: bool, max_unconfirmed: int, window: int
    ) -> None:
        self._link = link
        self._inbox = inbox
        self._host = host
        self.confirming = confirming
        self.max_unconfirmed = max_unconfirmed
        self.window = min(window, max_unconfirmed)
        self.outbox = Outbox()
        self.broken = False  # the connection was lost and is not yet recovered
        self._producer: Producer | None = None
        self._frames: Frames | None = None  # AMQP: publishes written by us (see sending.py)
        self._exchanges_declared: set[str] = set()
        self._pumping = False
        self._overtaken_since: float | None = None  # see OVERTAKEN_FOR_S
        self.clock = time.monotonic
        self.max_message_bytes: int | None = None  # the broker's limit, once a refusal told it

    @property
    def pending(self) -> int:
        return len(self.outbox)

    def lost(self, error: BaseException | None = None) -> None:
        """The connection is gone: keep every unconfirmed message for the next one, but those
        its close says the broker refused for good (see transport/refusals)."""
        # What the last read found the channel closed with, unless ``error`` says why itself: a
        # publish on a channel the broker closed fails as "closed", and the close told why.
        closed_with = self._link.take_closed_with()
        refusal = refusals.classify(error) or refusals.classify(closed_with)
        if refusal is not None:
            self._drop_refused(refusal)
        if not self.broken and self._link.ever_connected:  # else the link said it is unreachable
            log.warning(
                "broker connection to %s lost with %d unconfirmed; reconnecting",
                redact_url(self._link.url), self.pending,
            )  # fmt: skip
        self.outbox.lost()
        self.broken = True

    def _drop_refused(self, refusal: refusals.Refusal) -> None:
        if refusal.max_size is not None:
            self.max_message_bytes = refusal.max_size  # refused before sending from now on
        dropped = self.outbox.refuse(refusal.matches, refusal.reason)
        log.warning(
            "broker %s refused %d message%s for good, not re-sent: %s",
            redact_url(self._link.url), len(dropped), "" if len(dropped) == 1 else "s", refusal.reason,
        )  # fmt: skip

    def reset(self) -> None:
        """A new connection replaces the lost one: a new producer, exchanges declared afresh."""
        self._producer = None
        self._frames = None
        self._exchanges_declared.clear()

    # -- publishing -----------------------------------------------------------------------

    def publish(self, message: Outgoing) -> None:
        if self.max_message_bytes is not None and len(message.body) > self.max_message_bytes:
            detail = (
                f"a message of {len(message.body)} bytes to {message.routing_key or message.exchange!r}"
                f" is over the {self.max_message_bytes} bytes {redact_url(self._link.url)} accepts"
            )
            log.warning("not published: %s", detail)
            raise PublishRefused(detail)
        if self._link.lost and not self.broken:
            # A read found it lost and its caller did not recover it (a control call is not
            # sent twice): the message goes on the connection that replaces it.
            self.lost()
        if not self.confirming:
            if self.broken:
                # Restore consumers first: a request sent before its reply queue is back
                # would be answered to nowhere.
                self._host.recover()
            self._send(message)
            if message.on_confirm is not None:
                self._inbox.confirmed(message.on_confirm)
            return
        if self.pending >= self.max_unconfirmed:
            self.await_confirms(self.max_unconfirmed - 1, deadline=time.monotonic() + 1.0)
            if self.pending >= self.max_unconfirmed:
                raise PublishError(
                    f"{self.pending} messages wait for confirmation by {redact_url(self._link.url)}"
                    f" (the bound is {self.max_unconfirmed}): is the broker reachable?"
                )
        self.outbox.add(message)
        self.pump()
        if not self.broken and self.outbox.unconfirmed >= self.window:
            self.await_confirms(self.window // 2, deadline=None)

    def flush(self, timeout_s: float) -> None:
        """Wait (bounded) for every confirm; then report what the broker returned.

        Raises:
            PublishUnreachable: when messages wait because the broker is unreachable (at
                ``timeout_s``, or at once once ``connect_retries`` are spent).
            PublishError: when some are still unconfirmed at ``timeout_s``, or the broker
                returned some as unroutable since the last flush.
        """
        if self.confirming:
            self.await_confirms(0, deadline=time.monotonic() + timeout_s)
            if self.pending:
                url = redact_url(self._link.url)
                if self.broken:
                    raise PublishUnreachable(url, describe(self._link.last_error), self.pending)
                raise PublishError(f"{self.pending} messages not confirmed by {url} within {timeout_s:g}s")
        self.report_returned(raise_=True)

    def report_returned(self, *, raise_: bool) -> None:
        """Log (one line) and raise for the messages returned since the last report; raise for
        those refused for good (logged when refused)."""
        refused = self.outbox.take_refused()
        returned = self.outbox.take_returned()
        detail = _summary(returned) if returned else ""
        if returned:
            log.warning("broker %s returned %s", redact_url(self._link.url), detail)
        if refused and raise_:
            raise PublishRefused(f"the broker refused {_summary(refused, 'for good')}")
        if returned and raise_:
            raise PublishError(f"the broker returned {detail}")

    def await_confirms(self, at_most: int, *, deadline: float | None) -> None:
        """Read confirms (reconnecting with back-off, re-sending) until ``pending <= at_most``,
        the deadline, or the connection gives up (its ``connect_retries`` spent)."""
        link = self._link
        while self.pending > at_most:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if self.broken and not link.due():
                if link.gave_up:
                    return
                link.check_stop()
                wait_s = link.backoff.wait_s(now)
                link.pause(wait_s if deadline is None else min(wait_s, deadline - now))
                continue
            try:
                if self.broken or self.outbox.unsent:
                    self.pump()  # reconnects once if due; re-sends what was nacked
                if not self.broken:
                    link.drain_events(0.1)
                    self._check_overtaken()
            except link.errors as exc:
                self.lost(exc)

    def pump(self) -> None:
        """Send what waits, in order; on a lost connection keep it for after a reconnect."""
        if self._pumping:
            return  # a reconnect inside the send loop: the loop below goes on sending
        self._pumping = True
        try:
            if self.broken:
                if not self._link.due():
                    return  # backing off: publishing must not hang while the broker is away
                self._host.recover(max_retries=0)
            outbox = self.outbox
            while (message := outbox.head()) is not None:
                self._send(message)
                outbox.sent()
        except self._link.errors as exc:
            self.lost(exc)
        finally:
            self._pumping = False

    # -- the broker's answers (read during any wait: they only update the outbox) -----------

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if self.broken:
            return  # the lost channel's: its tags are not the next channel's
        for callback in self.outbox.ack(delivery_tag, multiple=multiple):
            self._inbox.confirmed(callback)
        self._check_overtaken()

    def _check_overtaken(self) -> None:
        """A message overtaken by later confirms for ``OVERTAKEN_FOR_S``: a new connection."""
        if not self.outbox.overtaken:
            self._overtaken_since = None
            return
        now = self.clock()
        if self._overtaken_since is None:
            self._overtaken_since = now
        elif now - self._overtaken_since >= OVERTAKEN_FOR_S and not self.broken:
            log.warning(
                "a message unconfirmed for %gs while later ones were confirmed (its queue's leader"
                " lost?): re-sending on a new connection", OVERTAKEN_FOR_S,
            )  # fmt: skip
            self._overtaken_since = None
            self.lost()  # the next drain, publish or flush recovers (to the next node of a cluster)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        refused = self.outbox.nack(delivery_tag, multiple=multiple)
        if not refused:
            return
        # Counted per message: the acks of other messages (to a stream, say) while one queue
        # refuses this one do not end its run, or it would be re-sent to the same channel for good.
        in_a_row = max(message.refusals for message in refused)
        if in_a_row & (in_a_row - 1) == 0:  # at 1, 2, 4, 8... in a row: not a line per nack
            log.warning(
                "broker refused %d messages (%d nacks in a row); re-sending them", len(refused), in_a_row
            )
        if in_a_row >= NACKS_BEFORE_NEW_CONNECTION and not self.broken:
            log.warning("%d nacks in a row: re-sending on a new connection", in_a_row)
            self.lost()  # the next drain, publish or flush recovers (to the next node of a cluster)

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        body = message.body
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogateescape")
        reason = f"{getattr(exc, 'reply_code', '?')} {getattr(exc, 'reply_text', exc)}"  # 312 NO_ROUTE
        self.outbox.returned(exchange, routing_key, body, reason)

    def _send(self, message: Outgoing) -> None:
        if self._producer is None:
            # With confirms a message waits in the outbox: one attempt, the back-off does the rest.
            self._link.connect(max_retries=0 if self.confirming else "default")
            channel: Any = self._link.channel  # py-amqp's channel: confirms are its extension
            if self._link.is_amqp:
                channel.events["basic_return"].add(self._on_return)
                self._frames = Frames(channel, self._host.user_id)
            if self.confirming:
                channel.confirm_select()
                channel.events["basic_ack"].add(self._on_ack)
                channel.events["basic_nack"].add(self._on_nack)
            self._producer = Producer(channel)
        if message.exchange and message.exchange not in self._exchanges_declared:
            self._host.prepare(message.exchange)
            self._exchanges_declared.add(message.exchange)
            if self._producer is None:  # the declare met a lost connection and recovered it
                self._send(message)  # on the new one (the exchange is declared there: once)
                return
        # Events must reach the log; heartbeats (presence) may find nobody listening.
        mandatory = (
            self._link.is_amqp
            and message.routing_key.startswith(_EVENT_KEY_PREFIX)
            and message.exchange == names.EVENTS_EXCHANGE
        )
        if self._frames is not None:
            self._frames.publish(message, mandatory=mandatory)
            return
        self._producer.publish(
            message.body,
            exchange=message.exchange,
            routing_key=message.routing_key,
            content_type=names.CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2 if message.persistent else 1,
            headers=message.headers,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            expiration=message.expiration_s,
            user_id=self._host.user_id,
            mandatory=mandatory,
            retry=False,
        )


def _summary(returned: list[Returned], how: str = "as unroutable") -> str:
    """``3 messages as unroutable: task.vdsm.created (312 NO_ROUTE), ...`` (a few keys named)."""
    keys: dict[tuple[str, str], int] = {}
    for item in returned:
        keys[(item.routing_key, item.reason)] = keys.get((item.routing_key, item.reason), 0) + 1
    named = ", ".join(
        f"{key} ({reason})" + (f" x{n}" if n > 1 else "") for (key, reason), n in list(keys.items())[:3]
    )
    more = f" and {len(keys) - 3} more routing keys" if len(keys) > 3 else ""
    plural = "message" if len(returned) == 1 else "messages"
    return f"{len(returned)} {plural} {how}: {named}{more}"
