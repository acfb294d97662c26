"""JSON-RPC calls of the HTTP front door, through its ``RpcBridge``: answered as RPC answers them.

Every HTTP request that reads or changes the view goes through the aggregator's loop this way
(``bus_tasks.rpc``); the front door never touches the aggregator's objects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from typing import Any, Protocol

from bus_tasks.errors import BrokerUnavailable, DeadlineExceeded
from bus_tasks.protocol import jsonrpc

log = logging.getLogger(__name__)


class Bridge(Protocol):
    """What calls need of :class:`~bus_tasks.frontdoors.bridge.RpcBridge`: publish, and its state."""

    @property
    def recovering(self) -> bool: ...

    def submit(
        self, body: bytes, correlation_id: str, deadline: float, *, on_behalf_of: str | None = None
    ) -> None: ...


class RpcCaller:
    """Awaitable calls with a real deadline; one future per correlation id, stale replies dropped."""

    def __init__(self, *, timeout_s: float, broker: str = "") -> None:
        self.timeout_s = timeout_s
        self.broker = broker  # redacted, for errors
        self.bridge: Bridge | None = None  # once connected (attached to the loop)
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def attach(self, bridge: Bridge) -> None:
        """Call through ``bridge`` (already attached to this loop) from now on."""
        self.bridge = bridge

    def on_reply(self, correlation_id: str, body: bytes) -> None:
        """The bridge's ``on_reply`` (in the loop)."""
        future = self._pending.pop(correlation_id, None)
        if future is None:
            log.debug("stale reply %s dropped", correlation_id)
        elif not future.done():
            future.set_result(body)

    async def call(self, method: str, params: dict[str, Any], *, identity: str | None = None) -> Any:
        """The result of ``method`` called for ``identity`` (None: anonymous), within ``timeout_s``.

        Raises:
            BusTasksError: the aggregator's error (UnknownTask, InvalidParameter ...);
                DeadlineExceeded when no reply came in time; BrokerUnavailable before the front
                door first reached the broker.
        """
        bridge = self.bridge
        if bridge is None:
            raise BrokerUnavailable(self.broker, "the http front door has not reached the broker yet")
        correlation_id = f"{self._prefix}{next(self._ids):x}"
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        body = jsonrpc.request_body(correlation_id, method, params)
        bridge.submit(body, correlation_id, time.monotonic() + self.timeout_s, on_behalf_of=identity)
        try:
            reply = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            log.warning("http: no reply to %s %s within %gs", method, correlation_id, self.timeout_s)
            raise DeadlineExceeded(method, self.timeout_s) from None
        finally:
            self._pending.pop(correlation_id, None)
        return jsonrpc.outcome(jsonrpc.parse_response(reply))
