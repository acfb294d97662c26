"""A raw JSON-RPC caller for tests: any body to ``bus_tasks.rpc``, replies collected by correlation id."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from bus_tasks import names
from bus_tasks.transport import Bus, Delivery

TIMEOUT_S = 10.0


class RawCaller:
    """Sends raw bodies to ``bus_tasks.rpc`` with a reply queue, and collects the replies."""

    def __init__(self, conn: Bus) -> None:
        self.conn = conn
        self.queue = conn.topology.declare_reply_queue(names.REPLY_QUEUE_PREFIX)
        self.replies: dict[str, bytes] = {}
        conn.consume(self.queue, self._on_reply, no_ack=True)

    def _on_reply(self, delivery: Delivery) -> None:
        assert delivery.correlation_id is not None
        self.replies[delivery.correlation_id] = delivery.body

    def send(
        self,
        body: bytes,
        *,
        sent_at: float | None = None,
        expiration_s: float = TIMEOUT_S,
        correlation_id: str | None = None,
        resent: bool = False,
        rpc_queue: str = names.RPC_QUEUE,
    ) -> str:
        """Publish ``body`` (under ``correlation_id``, a new one by default; ``resent``: marked as
        sent before, as a client marks a call it sends again after a failover)."""
        correlation_id = uuid.uuid4().hex if correlation_id is None else correlation_id
        headers: dict[str, Any] = {names.HEADER_SENT_AT: time.time() if sent_at is None else sent_at}
        if resent:
            headers[names.HEADER_RESENT] = True
        self.conn.publish(
            body,
            routing_key=rpc_queue,
            reply_to=self.queue,
            correlation_id=correlation_id,
            expiration_s=expiration_s,
            headers=headers,
            persistent=False,
        )
        return correlation_id

    def call(
        self,
        correlation_id: str,
        method: str,
        params: dict[str, Any],
        *,
        resent: bool = False,
        rpc_queue: str = names.RPC_QUEUE,
    ) -> dict[str, Any]:
        """One request, its JSON-RPC id its correlation id as TasksClient makes it: the response
        (taken, so that the same correlation id can be called again)."""
        body = json.dumps({"jsonrpc": "2.0", "id": correlation_id, "method": method, "params": params})
        self.send(body.encode(), correlation_id=correlation_id, resent=resent, rpc_queue=rpc_queue)
        [response] = self.wait([correlation_id])
        del self.replies[correlation_id]
        return response

    def wait(
        self,
        correlation_ids: list[str],
        *,
        timeout_s: float = TIMEOUT_S,
        check: Callable[[], None] = lambda: None,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while not all(c in self.replies for c in correlation_ids):
            check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sum(c not in self.replies for c in correlation_ids)
                raise TimeoutError(
                    f"{missing} of {len(correlation_ids)} replies missing after {timeout_s:g}s"
                )
            self.conn.drain(min(remaining, 0.5))
        return [json.loads(self.replies[c]) for c in correlation_ids]

    def arrived(self, correlation_id: str) -> bool:
        return correlation_id in self.replies
