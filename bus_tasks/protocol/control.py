"""Control commands between the aggregator and a subsystem, as JSON-RPC calls and notifications.

``stop``, ``revert`` and ``retag`` are calls (the subsystem answers or errs); ``clear`` and
``resync`` are notifications (nobody waits for them). A call carries its caller's call key
(``request``) where it has one: a caller that lost its reply with a broker node sends the call
again, and the owner answers the repeat as it answered the first (SPEC 17).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from bus_tasks.protocol import jsonrpc

Command = Literal["stop", "revert", "retag"]
NOTICES = ("clear", "resync")


class ControlParams(BaseModel):
    """The params of every control command; unknown members from a newer side are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    taskID: str = ""
    tags: tuple[str, ...] | None = None  # retag: the new tags
    request: str | None = None  # the caller's call key: a repeat of it is answered from memory


def command_body(
    control_id: str,
    command: Command,
    task_id: str,
    tags: tuple[str, ...] | None = None,
    *,
    request: str | None = None,
) -> bytes:
    params: dict[str, object] = {"taskID": task_id}
    if tags is not None:
        params["tags"] = list(tags)
    if request is not None:
        params["request"] = request
    return jsonrpc.request_body(control_id, command, params)


def clear_notice(task_id: str) -> bytes:
    """Tell a subsystem that a task of its was cleared: it drops its own copy."""
    return jsonrpc.notification_body("clear", {"taskID": task_id})


def resync_notice() -> bytes:
    """Ask every subsystem to announce its live tasks again."""
    return jsonrpc.notification_body("resync", {})
