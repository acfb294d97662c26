"""The client's side of a reply: a response's result or typed error; a batch's, matched by id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bus_tasks import codec
from bus_tasks.errors import BusTasksError, InternalError
from bus_tasks.protocol import jsonrpc


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one call of a batch came to: its result, or the typed error it was answered with."""

    method: str
    value: Any = None
    error: BusTasksError | None = None

    def result(self) -> Any:
        """The call's result.

        Raises:
            BusTasksError: the error the call was answered with.
        """
        if self.error is not None:
            raise self.error
        return self.value


def unpack_batch(body: bytes, ids: list[str], methods: list[str]) -> list[Outcome]:
    """Match a batch's responses to its calls by id (JSON-RPC 2.0 allows any order)."""
    with codec.gc_paused():
        try:
            responses = codec.loads(body)
        except codec.DecodeError as exc:
            raise InternalError(f"reply is not JSON: {exc}") from None
    if isinstance(responses, dict):  # an error for the batch as a whole
        jsonrpc.outcome(jsonrpc.check_response(responses))
        raise InternalError("a batch was answered with one result")
    if not isinstance(responses, list):
        raise InternalError("a batch reply is not a JSON array")
    by_id: dict[Any, jsonrpc.Response] = {}
    for response in responses:
        checked = jsonrpc.check_response(response)
        by_id[checked.get("id")] = checked
    outcomes = []
    for request_id, method in zip(ids, methods, strict=True):
        response = by_id.get(request_id)
        if response is None:
            outcomes.append(Outcome(method, error=InternalError(f"no response for {method} in the batch")))
            continue
        try:
            outcomes.append(Outcome(method, value=jsonrpc.outcome(response)))
        except BusTasksError as exc:
            outcomes.append(Outcome(method, error=exc))
    return outcomes


def unpack(body: bytes) -> Any:
    with codec.gc_paused():
        response = jsonrpc.parse_response(body)
    return jsonrpc.outcome(response)
