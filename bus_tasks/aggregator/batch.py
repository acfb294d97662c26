"""The reply to a JSON-RPC batch: its members' responses, sent once the last one is in."""

from __future__ import annotations

from bus_tasks.aggregator.relay import Deliver
from bus_tasks.protocol import jsonrpc


class BatchReply:
    """Collects the responses of a batch's members, some answered at once, some later (a stop
    waits for its subsystem), and delivers one array when all are in and the batch is closed.

    A batch whose members were all notifications gets no reply at all (JSON-RPC 2.0).
    """

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._responses: list[bytes | None] = []
        self._waiting = 0
        self._closed = False
        self._sent = False

    def add(self, response: bytes) -> None:
        """A member answered at once."""
        self._responses.append(response)

    def reserve(self) -> int:
        """A place for a member answered later; returns its slot."""
        self._responses.append(None)
        self._waiting += 1
        return len(self._responses) - 1

    def filler(self, slot: int | None) -> Deliver:
        """What delivers the later response of ``slot`` (None: a notification, answered by nothing)."""
        if slot is None:
            return lambda response: None
        return lambda response: self._fill(slot, response)

    def close(self) -> None:
        """Every member is served or waiting: send now if none waits."""
        self._closed = True
        self._send_if_done()

    def _fill(self, slot: int, response: bytes) -> None:
        if self._responses[slot] is not None:
            return  # answered already (a late duplicate)
        self._responses[slot] = response
        self._waiting -= 1
        self._send_if_done()

    def _send_if_done(self) -> None:
        if self._sent or not self._closed or self._waiting:
            return
        self._sent = True
        responses = [r for r in self._responses if r is not None]
        if responses:
            self._deliver(jsonrpc.batch_body(responses))
