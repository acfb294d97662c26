"""Who may call what (SPEC 16), as one table: every identity against every call."""

from __future__ import annotations

import pytest

from bus_tasks.authorization import (
    ADMIN_CALLS,
    Action,
    Call,
    Roles,
    allowed_calls,
    authorize,
    call_of,
    shown,
)
from bus_tasks.protocol.methods import MethodName

ROLES = Roles.of(readers=["rita", "both"], operators=["otto", "both"], admins=["ada"])

M = MethodName
READS: set[Call] = {
    M.GET_ALL_TASKS,
    M.GET_ALL_TASKS_INFO,
    M.GET_ALL_TASKS_STATUSES,
    M.GET_TASK_CHANGES,
    M.GET_SUBSYSTEMS,
    M.GET_AGGREGATORS,
    M.GET_STATUS,
    M.GET_INFO,
    M.GET_DETAILS,
    Action.WATCH,
}
CONTROL: set[Call] = {M.STOP, M.REVERT, M.CLEAR}
ADMIN_ONLY: set[Call] = {M.RETAG, Action.FORCED_CLEAR, Action.INJECT_TEST_TASKS}
EVERY_CALL: list[Call] = [*MethodName, *Action]

# identity -> the calls it may make; every other call of EVERY_CALL is denied.
TABLE: dict[str | None, set[Call]] = {
    "rita": READS,
    "otto": READS | CONTROL,
    "both": READS | CONTROL,  # in two roles: the higher counts
    "ada": READS | CONTROL | ADMIN_ONLY,
    "mallory": set(),  # in no role
    "": set(),
    "RITA": set(),  # identities are exact, case and all
    None: set(),  # anonymous
}


def test_the_table_names_every_call_once() -> None:
    assert set(EVERY_CALL) == READS | CONTROL | ADMIN_ONLY
    assert len(READS) + len(CONTROL) + len(ADMIN_ONLY) == len(EVERY_CALL)


@pytest.mark.parametrize("call", EVERY_CALL, ids=str)
@pytest.mark.parametrize("identity", list(TABLE), ids=repr)
def test_a_call_is_allowed_exactly_when_the_callers_role_lists_it(identity: str | None, call: Call) -> None:
    assert authorize(identity, call, ROLES) is (call in TABLE[identity])


@pytest.mark.parametrize("identity", list(TABLE), ids=repr)
def test_allowed_calls_are_what_authorize_allows(identity: str | None) -> None:
    assert allowed_calls(identity, ROLES) == TABLE[identity]


def test_a_method_added_later_is_denied_until_a_role_lists_it() -> None:
    assert set(MethodName) <= ADMIN_CALLS  # today every method has a role ...
    unknown: Call = "Host.somethingNew"  # type: ignore[assignment]
    assert not any(authorize(identity, unknown, ROLES) for identity in TABLE)  # ... a new one none


def test_with_no_roles_at_all_everything_is_denied() -> None:
    assert not any(authorize(identity, call, Roles()) for identity in TABLE for call in EVERY_CALL)


@pytest.mark.parametrize(
    ("method", "force", "call"),
    [
        (M.CLEAR, True, Action.FORCED_CLEAR),
        (M.CLEAR, False, M.CLEAR),
        (M.STOP, True, M.STOP),  # force means something to clear alone
        (M.GET_STATUS, False, M.GET_STATUS),
    ],
)
def test_a_clear_with_force_is_its_own_call(method: MethodName, force: bool, call: Call) -> None:
    assert call_of(method, force=force) == call


@pytest.mark.parametrize(
    ("identity", "named"),
    [
        ("ada", "ada"),
        (None, "anonymous"),
        ("CN with blanks", "CN with blanks"),
        ("evil\nline", "'evil\\nline'"),
    ],
)
def test_an_identity_is_named_on_one_line(identity: str | None, named: str) -> None:
    assert shown(identity) == named
