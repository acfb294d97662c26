"""What the HTTP front door answers besides results: its errors as ``{"code", "message"}`` with
their HTTP status, and the query parameters it reads, checked as the RPC checks them."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiMapping

from bus_tasks import codec
from bus_tasks.errors import (
    BrokerUnavailable,
    BusTasksError,
    DeadlineExceeded,
    GeneralError,
    InvalidParameter,
    NoAggregator,
)
from bus_tasks.frontdoors.http.mirror import Selection
from bus_tasks.protocol.params import query_tags

# HTTP status of each wire error code; the body is always {"code", "message"}.
STATUS_OF_CODE = {
    **{401: 404, 1000: 400, -32602: 400, -32600: 400, -32700: 400, 403: 409, 410: 409, 411: 409},
    -32011: 403,  # the caller's role does not allow the call (SPEC 16)
}


class Refused(Exception):
    """Raised by a handler for an HTTP error that is not an RPC's: sent as ``{"code", "message"}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = GeneralError(message=message)
        self.headers = headers


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=codec.dumps(value),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error_response(error: BusTasksError, headers: dict[str, str] | None = None) -> web.Response:
    if isinstance(error, BrokerUnavailable | NoAggregator):
        status = 503
    elif isinstance(error, DeadlineExceeded) or error.code == GeneralError.code:
        status = 504  # our deadline, or the aggregator's for a command its subsystem left unanswered
    else:
        status = STATUS_OF_CODE.get(error.code, 502)
    return json_response(error.to_wire(), status, headers)


def selection_of(query: MultiMapping[str], *, allowed: frozenset[str]) -> Selection:
    """The ``tag`` (repeated) and ``match`` of a query, checked as getAllTasks checks them.

    Raises:
        InvalidParameter: for an unknown parameter, a bad tag or match; InvalidParams: too many tags.
    """
    for name in query:
        if name not in allowed:
            raise InvalidParameter("query", name)
    tags = tuple(query_tags(query.getall("tag", [])))
    matches = query.getall("match", ("any",))
    if len(matches) != 1 or matches[0] not in ("any", "all"):
        raise InvalidParameter("match", ",".join(matches))
    return Selection(tags, matches[0] == "all")


def revision_of(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    # ASCII digits of a signed 64-bit number (as stores keep revisions): int() of thousands of
    # digits would raise ValueError instead, and a larger revision cannot be encoded.
    digits = text.lstrip("0") or "0"
    if not (text.isascii() and text.isdigit()) or len(digits) > 19 or int(digits) >= 2**63:
        raise InvalidParameter(name, text[:40])
    return int(digits)


def page_of(query: MultiMapping[str]) -> dict[str, Any]:
    """The paging options of a query (``limit``, ``continue``); empty when it asks every task.

    Raises:
        InvalidParameter: for a limit that is not one decimal integer, or a repeated parameter.
    """
    page: dict[str, Any] = {}
    for name in ("limit", "continue"):
        given = query.getall(name, ())
        if len(given) > 1:
            raise InvalidParameter(name, ",".join(given)[:40])
        if given:
            page[name] = given[0]
    if "limit" in page:
        text = page["limit"]
        if not (text.isascii() and text.isdigit() and len(text) <= 9):
            raise InvalidParameter("limit", text[:40])
        page["limit"] = int(text)
    return page
