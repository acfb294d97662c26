"""JSON-RPC 2.0, written once: typed envelopes, building them, parsing and binding them.

The aggregator's method table, its control relay, the subsystems' control side and the client
all speak through these functions; no other module builds or parses an envelope by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, TypeVar, cast

from pydantic import BaseModel, ValidationError

from bus_tasks import codec
from bus_tasks.core.model import describe_validation
from bus_tasks.errors import (
    BusTasksError,
    InternalError,
    InvalidParams,
    InvalidRequest,
    ParseError,
    from_wire,
)

RequestId = str | int | float | None
Params = dict[str, Any] | list[Any]
P = TypeVar("P", bound=BaseModel)


class ErrorObject(TypedDict):
    code: int
    message: str


class Request(TypedDict):
    """A call: answered with a :class:`Response` carrying the same ``id``."""

    jsonrpc: Literal["2.0"]
    method: str
    id: RequestId
    params: NotRequired[Params]


class Notification(TypedDict):
    """A call without an ``id``: never answered."""

    jsonrpc: Literal["2.0"]
    method: str
    params: NotRequired[Params]


class ResultResponse(TypedDict):
    jsonrpc: Literal["2.0"]
    id: RequestId
    result: Any


class ErrorResponse(TypedDict):
    jsonrpc: Literal["2.0"]
    id: RequestId
    error: ErrorObject


Response = ResultResponse | ErrorResponse


@dataclass(frozen=True, slots=True)
class EncodedObject:
    """A JSON object result, already encoded: pieces that, joined with commas inside braces,
    make the object (each a member ``"key":value``, or a run of a member's value: an object's
    members may stand among them, its opening on the first and its closing on the last).

    It is joined once, straight into the reply: a listing of 100,000 tasks costs one copy of
    its members, not an encoding of every task and then a copy into the envelope.
    """

    members: list[bytes]


# -- building -----------------------------------------------------------------------------


def request_body(request_id: RequestId, method: str, params: Params) -> bytes:
    request: Request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return codec.dumps(request)


def notification_body(method: str, params: Params) -> bytes:
    notification: Notification = {"jsonrpc": "2.0", "method": method, "params": params}
    return codec.dumps(notification)


def result_body(request_id: RequestId, result: Any) -> bytes:
    if isinstance(result, EncodedObject):
        head = b'{"jsonrpc":"2.0","id":%b,"result":{' % codec.dumps(request_id)
        members = result.members
        if len(members) < 2:
            return b"".join((head, *members, b"}}"))
        # One join, one copy of each member (a listing can be hundreds of MB): the envelope's
        # head and tail go onto the first and last member of a copy of the list.
        parts = list(members)
        parts[0] = head + parts[0]
        parts[-1] += b"}}"
        return b",".join(parts)
    response: ResultResponse = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return codec.dumps(response)


def error_body(request_id: RequestId, error: BusTasksError) -> bytes:
    response: ErrorResponse = {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": error.code, "message": error.message},
    }
    return codec.dumps(response)


# -- parsing ------------------------------------------------------------------------------

_REQUEST_KEYS = frozenset({"jsonrpc", "id", "method", "params"})


def is_batch(body: bytes) -> bool:
    """Whether ``body`` holds a batch (a JSON array): its first non-blank byte is ``[``."""
    return body.lstrip(b" \t\r\n")[:1] == b"["


def parse_batch(body: bytes) -> list[Any]:
    """The members of the batch in ``body`` (each checked later, on its own: see :func:`check_request`).

    Raises:
        ParseError: when the body is not JSON.
        InvalidRequest: when it is not an array, or an empty one.
    """
    try:
        members = codec.loads(body)
    except codec.DecodeError as exc:
        raise ParseError(str(exc)) from None
    if not isinstance(members, list):
        raise InvalidRequest("a batch is a JSON array")
    if not members:
        raise InvalidRequest("an empty batch")
    return members


def batch_body(responses: list[bytes]) -> bytes:
    """The reply to a batch: its members' encoded responses, in one array."""
    return b"[" + b",".join(responses) + b"]"


def parse_request(body: bytes) -> Request | Notification:
    """The request in ``body``, checked against JSON-RPC 2.0.

    Raises:
        ParseError: when the body is not JSON.
        InvalidRequest: when it is JSON but not a request object (a batch is refused here:
            see :func:`parse_batch`).
    """
    try:
        request = codec.loads(body)
    except codec.DecodeError as exc:
        raise ParseError(str(exc)) from None
    if isinstance(request, list):
        raise InvalidRequest("a batch is not a single request")
    return check_request(request)


def is_notification(request: Request | Notification) -> bool:
    """A request without an ``id`` member: JSON-RPC answers none (in a batch)."""
    return "id" not in request


def check_request(request: Any) -> Request | Notification:
    """``request`` (decoded JSON) checked against JSON-RPC 2.0.

    Raises:
        InvalidRequest: when it is not a request object.
    """
    if not isinstance(request, dict):
        raise InvalidRequest("a request is a JSON object")
    if request.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be "2.0"')
    if not isinstance(request.get("method"), str):
        raise InvalidRequest('"method" must be a string')
    if "id" in request and not _is_id(request["id"]):
        raise InvalidRequest('"id" must be a string, a number or null')
    extra = request.keys() - _REQUEST_KEYS
    if extra:
        raise InvalidRequest(f"unknown members {sorted(extra)}")
    params = request.get("params")
    if params is not None and not isinstance(params, dict | list):
        raise InvalidRequest('"params" must be an object or an array')
    return request  # type: ignore[return-value]  # checked member by member above


def request_id_of(request: Request | Notification) -> RequestId:
    return request.get("id")  # type: ignore[return-value]  # a Notification has none


def salvage_id(body: bytes) -> RequestId:
    """The id of a request that failed validation, when it has a well-formed one."""
    try:
        request = codec.loads(body)
    except codec.DecodeError:
        return None
    return id_of(request)


def id_of(request: Any) -> RequestId:
    """The id of a decoded request, when it has a well-formed one; else None."""
    request_id = request.get("id") if isinstance(request, dict) else None
    return request_id if _is_id(request_id) else None


def _is_id(value: Any) -> bool:
    return value is None or (not isinstance(value, bool) and isinstance(value, str | int | float))


def bind(model: type[P], params: Params | None) -> P:
    """The params of a request as ``model`` (positional params fill its fields in order).

    Raises:
        InvalidParams: when they do not fit ``model``.
    """
    if params is None:
        params = {}
    elif isinstance(params, list):
        names = list(model.model_fields)
        if len(params) > len(names):
            raise InvalidParams(f"at most {len(names)} positional params ({', '.join(names)})")
        params = dict(zip(names, params, strict=False))
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise InvalidParams(describe_validation(exc)) from None


def parse_response(body: bytes) -> Response:
    """The response in ``body``.

    Raises:
        InternalError: when it is not a JSON-RPC response object.
    """
    try:
        response = codec.loads(body)
    except codec.DecodeError as exc:
        raise InternalError(f"reply is not JSON: {exc}") from None
    return check_response(response)


def check_response(response: Any) -> Response:
    """``response`` (decoded JSON) checked to be a JSON-RPC response.

    Raises:
        InternalError: when it is not a JSON-RPC response object.
    """
    if not isinstance(response, dict):
        raise InternalError("reply is not a JSON object")
    if "error" not in response and "result" not in response:
        raise InternalError("reply has neither result nor error")
    if not _is_id(response.get("id")):  # a batch's responses are matched by it: hashable
        raise InternalError('reply\'s "id" is not a string, a number or null')
    return response  # type: ignore[return-value]  # result or error checked above


def outcome(response: Response) -> Any:
    """The result of a response.

    Raises:
        BusTasksError: the typed error it carries (UnknownTask, InvalidParams ...).
    """
    if "error" in response:
        error = cast(ErrorResponse, response)["error"]
        raise from_wire(dict(error) if isinstance(error, dict) else {})
    return response["result"]
