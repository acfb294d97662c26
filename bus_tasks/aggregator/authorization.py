"""Who may call what, as the aggregator's call policy (SPEC 16, docs/authorization.md).

:class:`Authorization` refuses every call that :func:`~bus_tasks.authorization.authorize` does not
allow (-32011, before the method runs: no effect), and writes one audit line per control action
once it is answered. :func:`caller_of` decides who calls: the broker-validated ``user_id``, or
whom a trusted front door says it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from bus_tasks import names
from bus_tasks.aggregator.policy import CallPolicy
from bus_tasks.authorization import CONTROL_CALLS, Roles, authorize, call_of, shown
from bus_tasks.errors import PermissionDenied
from bus_tasks.protocol.context import CallContext, Door
from bus_tasks.protocol.methods import MethodName, canonical
from bus_tasks.protocol.params import ClearParams, TaskParams

log = logging.getLogger(__name__)
audit_log = logging.getLogger("bus_tasks.audit")

_FRONT_DOORS: dict[str, Door] = {"stomp": "stomp", "http": "http"}


class Authorization(CallPolicy):
    """Deny by default: a call is served only when the caller's role allows it."""

    def __init__(self, roles: Roles) -> None:
        self.roles = roles

    def admit(self, context: CallContext, method: MethodName, params: BaseModel) -> None:
        call = call_of(method, force=isinstance(params, ClearParams) and params.force)
        if not authorize(context.identity, call, self.roles):
            raise PermissionDenied(shown(context.identity), call)

    def served(
        self,
        context: CallContext,
        method: str,
        outcome: str,
        seconds: float,
        *,
        params: BaseModel | None = None,
    ) -> None:
        name = canonical(method)
        if name is None or not isinstance(params, TaskParams):
            return
        call = call_of(name, force=isinstance(params, ClearParams) and params.force)
        if call in CONTROL_CALLS:
            audit_log.info(
                "audit identity=%s door=%s method=%s task=%s outcome=%s",
                shown(context.identity),
                context.door,
                call,
                params.taskID if params.taskID.isprintable() else repr(params.taskID),
                outcome,
            )


def caller_of(
    user_id: str | None,
    headers: Mapping[str, Any],
    *,
    front_doors: Iterable[str] | None,
    deadline: float | None,
    correlation_id: str | None = None,
) -> CallContext:
    """Who calls, for a request sent by ``user_id`` with ``headers``.

    A front door (``bus-tasks stomp``, the HTTP door) publishes its clients' calls with the door's
    name and the client's identity in headers; they are believed only when ``user_id`` (validated
    by RabbitMQ) is one of ``front_doors``. From anybody else they are ignored: the call is the
    sender's own, judged by the sender's role, and one line says so. ``front_doors`` None (no
    authorization): the headers are not read. ``correlation_id`` and the ``resent`` header name
    the call across its caller's re-sends (see :meth:`CallContext.call_key`).
    """
    resent = bool(headers.get(names.HEADER_RESENT))
    if front_doors is None or names.HEADER_DOOR not in headers:
        return CallContext(user_id, "amqp", deadline, correlation_id, resent)
    door = _FRONT_DOORS.get(_text(headers[names.HEADER_DOOR]) or "")
    on_behalf_of = _text(headers.get(names.HEADER_ON_BEHALF_OF)) or None
    if user_id is None or user_id not in front_doors or door is None:
        log.warning(
            "a call of %s says it is for %s through a front door: %s, judged as its sender's own",
            shown(user_id),
            shown(on_behalf_of),
            "an unknown door" if door is None else "not from a front door (front_doors)",
        )
        return CallContext(user_id, "amqp", deadline, correlation_id, resent)
    return CallContext(on_behalf_of, door, deadline, correlation_id, resent)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None
