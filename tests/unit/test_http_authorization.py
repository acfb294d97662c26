"""The HTTP front door with authorization on, over the aggregator's real method table and its
authorization policy: tokens name the callers, 401 without a known one, 403 for a denied call
(no effect), the watch judged here, whoami; and the settings keep the tokens secret."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from support.environment import without_settings
from support.factories import make_event, task_id
from test_http_support import Door, make_door, serving

from bus_tasks import codec
from bus_tasks.aggregator.authorization import Authorization
from bus_tasks.authorization import Action, Roles, authorize
from bus_tasks.config import Settings, load_settings
from bus_tasks.core.model import State
from bus_tasks.errors import ConfigError
from bus_tasks.frontdoors.http.access import TOKEN_COOKIE, HttpAccess
from bus_tasks.frontdoors.http.server import HttpOptions
from bus_tasks.identity import Speech, refusal
from bus_tasks.workers import wiring

ROLES = Roles.of(readers=["rita"], operators=["otto"])
TOKENS = {"rita": "rita-token-0123456789", "otto": "otto-token-0123456789", "mallory": "mallory-token-01234"}
RUNNING = task_id(1)


def door() -> Door:
    access = HttpAccess({who: SecretStr(token) for who, token in TOKENS.items()}, ROLES)
    made = make_door(options=HttpOptions(access=access))
    made.bridge.dispatcher.policy = Authorization(ROLES)
    made.view.apply(make_event(1, state=State.RUNNING))
    return made


async def fetch(
    made: Door, path: str, *, who: str | None = None, method: str = "GET", cookie: bool = False
) -> tuple[int, Any]:
    headers = {}
    cookies = {}
    if who is not None and cookie:
        cookies[TOKEN_COOKIE] = TOKENS.get(who, who)
    elif who is not None:
        headers["Authorization"] = f"Bearer {TOKENS.get(who, who)}"
    async with (
        serving(made.door) as session,
        session.request(method, path, headers=headers, cookies=cookies) as response,
    ):
        if response.content_type == "text/event-stream":
            return response.status, None
        return response.status, codec.loads(await response.read())


def call(made: Door, path: str, **kwargs: Any) -> tuple[int, Any]:
    return asyncio.run(fetch(made, path, **kwargs))


@pytest.mark.parametrize("path", ["/api/tasks", f"/api/tasks/{RUNNING}"])
@pytest.mark.parametrize("who", [None, "a-token-of-nobody-000"])
def test_reading_without_a_known_token_is_401_with_a_challenge(path: str, who: str | None) -> None:
    status, body = call(door(), path, who=who)
    assert status == 401
    assert set(body) == {"code", "message"}


@pytest.mark.parametrize(("who", "status"), [("rita", 200), ("otto", 200), ("mallory", 403)])
def test_reading_is_as_the_tokens_identity_may(who: str, status: int) -> None:
    assert call(door(), f"/api/tasks/{RUNNING}", who=who)[0] == status
    assert call(door(), "/api/tasks", who=who)[0] == status


def test_a_get_may_carry_the_token_as_the_cookie_a_post_may_not() -> None:
    made = door()
    assert call(made, f"/api/tasks/{RUNNING}", who="rita", cookie=True)[0] == 200
    assert call(made, f"/api/tasks/{RUNNING}/stop", who="otto", cookie=True, method="POST")[0] == 401
    assert made.bridge.forwarded == []


def test_a_denied_stop_is_403_with_the_rpc_error_and_is_not_forwarded() -> None:
    made = door()
    status, body = call(made, f"/api/tasks/{RUNNING}/stop", who="rita", method="POST")
    assert (status, body) == (
        403,
        {"code": -32011, "message": "Permission denied: rita may not call Task.stop"},
    )
    assert made.bridge.forwarded == []
    assert call(made, f"/api/tasks/{RUNNING}/stop", who="otto", method="POST") == (200, True)
    assert len(made.bridge.forwarded) == 1


def test_the_watch_is_judged_by_the_door_itself() -> None:
    assert call(door(), "/api/watch", who="mallory") == (
        403,
        {"code": -32011, "message": "Permission denied: mallory may not call watch"},
    )
    assert call(door(), "/api/watch")[0] == 401


def test_whoami_and_config() -> None:
    made = door()
    assert call(made, "/api/config") == (200, {"control": True, "authorization": True})
    status, otto = call(made, "/api/whoami", who="otto")
    assert (status, otto["identity"], otto["role"], otto["authorization"]) == (200, "otto", "operator", "on")
    assert {"Task.stop", "Task.clear", "Task.getStatus"} <= set(otto["calls"])
    assert call(made, "/api/whoami") == (
        200,
        {"authorization": "on", "identity": None, "role": None, "calls": []},
    )
    assert call(make_door(), "/api/whoami")[1]["authorization"] == "off"


def test_tokens_are_never_in_the_settings_repr_or_a_refusal() -> None:
    token = "a-secret-token-0123456789"
    settings = Settings(authorization="on", readers=["rita"], http_tokens={"rita": SecretStr(token)})
    assert token not in repr(settings)
    assert token not in repr(HttpAccess(settings.http_tokens, settings.roles))
    with pytest.raises(ValueError, match="shorter than 16") as refused:
        Settings(http_tokens={"rita": SecretStr("short-secret")})
    assert "short-secret" not in str(refused.value.errors(include_input=False))  # type: ignore[attr-defined]


def test_on_without_any_role_or_with_the_shared_token_is_refused() -> None:
    with pytest.raises(ValueError, match="every call is denied"):
        Settings(authorization="on")
    with pytest.raises(ValueError, match="not http_token"):
        Settings(authorization="on", readers=["rita"], http_token=SecretStr("x" * 20))
    with pytest.raises(ValueError, match="same token"):
        Settings(http_tokens={"a": SecretStr("t" * 16), "b": SecretStr("t" * 16)})


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        (Settings(), True),
        (Settings(broker_url=SecretStr("memory://")), False),
        (Settings(authorization="on", readers=["rita"]), False),
        (
            Settings(authorization="on", readers=["rita"], broker_url=SecretStr("redis://127.0.0.1:6379/0")),
            True,
        ),
    ],
)
def test_serve_warns_once_when_authorization_is_off_on_a_real_broker_or_cannot_be_believed(
    settings: Settings, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test.serve")
    with caplog.at_level(logging.WARNING, logger="test.serve"):
        wiring.warn_if_authorization_off(settings, log)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.serve"]
    assert len(lines) == (1 if warned else 0)


def test_a_short_token_in_the_environment_is_refused_without_being_echoed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("BUS_TASKS_HTTP_TOKENS", '{"rita": "short-secret"}')
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "http_tokens" in refused.value.message
    assert "short-secret" not in refused.value.message


@pytest.mark.parametrize(
    ("user_id", "believed"), [("ops", True), ("agg1", True), ("engine", False), ("rita", False)]
)
def test_with_authorization_on_the_admins_publish_test_tasks_and_nobody_else_but_aggregators(
    user_id: str, believed: bool
) -> None:
    settings = Settings(
        identity="broker",
        aggregators=["agg1"],
        authorization="on",
        readers=["rita"],
        operators=["engine"],
        admins=["ops"],
    )
    trust = replace(settings.trust, test_subsystem=settings.test_subsystem)  # as the aggregator does
    assert authorize(user_id, Action.INJECT_TEST_TASKS, settings.roles) is (user_id == "ops")
    assert (refusal(trust, Speech.EVENT, "test", user_id) is None) is believed
    assert refusal(trust, Speech.EVENT, "vdsm", "ops") is not None  # test tasks only
