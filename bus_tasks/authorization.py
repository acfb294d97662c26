"""Who may call what (SPEC 16): roles, and the one pure decision every door's calls go through.

Deny by default: an identity in no role, an anonymous caller, or a call no role lists is denied.
The aggregator asks :func:`authorize` for every RPC call (aggregator/authorization.py); the HTTP
front door asks it for what it serves itself (the watch, the web view's offer of control). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from bus_tasks.protocol.methods import READS, MethodName

AuthorizationMode = Literal["off", "on"]
Role = Literal["reader", "operator", "admin"]
ROLES: tuple[Role, ...] = ("reader", "operator", "admin")  # each may do what the one before may

ANONYMOUS = "anonymous"  # how a caller without identity is named in errors and audit lines


class Action(StrEnum):
    """What a role allows that is not one method alone."""

    WATCH = "watch"  # the HTTP front door's /api/watch (a watcher's RPC is Host.getTaskChanges)
    FORCED_CLEAR = "Task.clear(force)"  # remove a task in any state (bus-tasks clear --force)
    INJECT_TEST_TASKS = "inject test tasks"  # publish tasks of the test subsystem (bus-tasks inject)


Call = MethodName | Action

READER_CALLS: frozenset[Call] = frozenset({*READS, Action.WATCH})
OPERATOR_CALLS: frozenset[Call] = READER_CALLS | {MethodName.STOP, MethodName.REVERT, MethodName.CLEAR}
ADMIN_CALLS: frozenset[Call] = OPERATOR_CALLS | {
    MethodName.RETAG,
    Action.FORCED_CLEAR,
    Action.INJECT_TEST_TASKS,
}
ALLOWED: dict[Role, frozenset[Call]] = {
    "reader": READER_CALLS,
    "operator": OPERATOR_CALLS,
    "admin": ADMIN_CALLS,
}

# The calls that change something, each logged in one audit line (SPEC 16).
CONTROL_CALLS: frozenset[Call] = frozenset(
    {MethodName.STOP, MethodName.REVERT, MethodName.CLEAR, MethodName.RETAG, Action.FORCED_CLEAR}
)


@dataclass(frozen=True, slots=True)
class Roles:
    """The identities of each role, as the settings list them (``readers``, ``operators``, ``admins``)."""

    readers: frozenset[str] = frozenset()
    operators: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, *, readers: Iterable[str] = (), operators: Iterable[str] = (), admins: Iterable[str] = ()
    ) -> Roles:
        return cls(frozenset(readers), frozenset(operators), frozenset(admins))

    def role_of(self, identity: str | None) -> Role | None:
        """The highest role ``identity`` holds; None for an anonymous caller or one in no role."""
        if identity is None:
            return None
        if identity in self.admins:
            return "admin"
        if identity in self.operators:
            return "operator"
        if identity in self.readers:
            return "reader"
        return None


NO_ROLES = Roles()


def call_of(method: MethodName, *, force: bool = False) -> Call:
    """What a call of ``method`` asks: ``Task.clear`` with ``force`` is an admin's removal."""
    return Action.FORCED_CLEAR if method is MethodName.CLEAR and force else method


def authorize(identity: str | None, call: Call, roles: Roles) -> bool:
    """Whether ``identity`` (None: anonymous) may make ``call`` (see :func:`call_of`)."""
    role = roles.role_of(identity)
    return role is not None and call in ALLOWED[role]


def allowed_calls(identity: str | None, roles: Roles) -> frozenset[Call]:
    """Every call ``identity`` may make (the web view offers these)."""
    role = roles.role_of(identity)
    return frozenset() if role is None else ALLOWED[role]


def shown(identity: str | None) -> str:
    """``identity`` as errors and log lines name it: ``anonymous`` for none, quoted when it holds
    what would break a log line."""
    if identity is None:
        return ANONYMOUS
    return identity if identity.isprintable() and identity.strip() == identity else repr(identity)
