"""Messages the broker refuses for good, told apart from a lost connection. Pure, no I/O.

RabbitMQ closes the channel of a publish it will never accept: ``406 PRECONDITION_FAILED -
message size N is larger than configured max size M``, or ``403 ACCESS_REFUSED - access to
exchange 'X' in vhost 'V' refused for user 'U'``. To the connection that looks like any lost
channel; re-sending the message after the reconnect would close it again, for ever. The close
names what was refused (the size, the exchange): the sender drops the messages that match and
keeps the rest (an unroutable ``mandatory`` message comes back as a basic.return instead, see
transport/outbox).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bus_tasks.transport.outbox import Outgoing

_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")
_ACCESS_REFUSED = re.compile(r"access to exchange '([^']*)' in vhost '[^']*' refused")
_DEFAULT_EXCHANGE = "amq.default"  # how RabbitMQ names the exchange "" in errors


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the broker refused for good, as its close said."""

    reason: str  # the broker's words, e.g. "406 PRECONDITION_FAILED - message size ..."
    size: int | None = None  # too large: the refused body's size ...
    max_size: int | None = None  # ... and the broker's limit, which holds for later messages
    exchange: str | None = None  # access refused: every message to this exchange

    def matches(self, message: Outgoing) -> bool:
        """Whether ``message`` is one the broker refused (and would refuse again)."""
        if self.max_size is not None:
            return len(message.body) > self.max_size
        return self.exchange is not None and message.exchange == self.exchange


def classify(error: BaseException | None) -> Refusal | None:
    """The refusal ``error`` (a channel or connection close) tells of; None for a lost connection."""
    code = getattr(error, "reply_code", None) or getattr(error, "code", None)
    text = str(getattr(error, "reply_text", "") or getattr(error, "message", "") or "")
    if error is None or code not in (403, 406) or not text:
        return None
    reason = f"{code} {text}"
    too_large = _TOO_LARGE.search(text)
    if code == 406 and too_large:
        return Refusal(reason, size=int(too_large.group(1)), max_size=int(too_large.group(2)))
    refused = _ACCESS_REFUSED.search(text)
    if code == 403 and refused:
        exchange = refused.group(1)
        return Refusal(reason, exchange="" if exchange == _DEFAULT_EXCHANGE else exchange)
    return None
