"""The HTTP API over the aggregator's real method table: answers equal RPC's, errors as
``{"code", "message"}`` with their HTTP status, control behind a token, health, metrics, web view."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from pydantic import SecretStr
from support.factories import make_event, task_id
from support.timing import Stopwatch, assert_ended_at
from test_http_support import Door, make_door, serving

from bus_tasks import codec
from bus_tasks.core.model import State
from bus_tasks.frontdoors.http.server import HttpOptions
from bus_tasks.protocol import jsonrpc

TOKEN = "s3cret-token-of-the-test"
UNKNOWN = task_id(999)


def with_tasks(door: Door) -> Door:
    view = door.view
    view.apply(make_event(1, tags=("spm",)))
    view.apply(make_event(2, tags=("spm", "volume:gv1"), subsystem="gluster"))
    view.apply(make_event(3, tags=("hsm",), state=State.FINISHED))
    view.revision = 7
    return door


def rpc_result(door: Door, method: str, params: dict[str, Any]) -> Any:
    """What the RPC answers, straight from the method table."""
    reply = door.bridge.dispatcher.handle(jsonrpc.request_body(1, method, params))
    assert reply.body is not None
    return jsonrpc.outcome(jsonrpc.parse_response(reply.body))


async def get(door: Door, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    async with serving(door.door) as session, session.get(path, **kwargs) as response:
        return response.status, codec.loads(await response.read()), dict(response.headers)


async def post(door: Door, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    async with serving(door.door) as session, session.post(path, **kwargs) as response:
        return response.status, codec.loads(await response.read()), dict(response.headers)


@pytest.mark.parametrize(
    ("query", "tags", "match"),
    [
        ("", None, "any"),
        ("?tag=spm", ["spm"], "any"),
        ("?tag=spm&tag=hsm", ["spm", "hsm"], "any"),
        ("?tag=spm&tag=volume:gv1&match=all", ["spm", "volume:gv1"], "all"),
        ("?tag=pm", ["pm"], "any"),
    ],
)
def test_api_tasks_equals_get_all_tasks_with_the_same_tags_and_match(
    query: str, tags: list[str] | None, match: str
) -> None:
    door = with_tasks(make_door())
    status, body, headers = asyncio.run(get(door, "/api/tasks" + query))
    expected = rpc_result(door, "Host.getAllTasks", {"tags": tags, "options": {"match": match}})
    assert (status, body, headers["X-Bus-Tasks-Revision"]) == (200, expected, "7")
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?tag=b%20d", "Invalid parameter: ('tags', 'b d')"),
        ("?tag=", "Invalid parameter: ('tags', '')"),
        ("?match=foo", "Invalid parameter: ('match', 'foo')"),
        ("?match=all&match=any", "Invalid parameter: ('match', 'all,any')"),
        ("?tags=spm", "Invalid parameter: ('query', 'tags')"),
    ],
)
def test_a_bad_query_is_400_with_code_1000_as_the_rpc_says(query: str, message: str) -> None:
    door = make_door()
    assert asyncio.run(get(door, "/api/tasks" + query))[:2] == (400, {"code": 1000, "message": message})
    assert door.bridge.forwarded == []


def test_api_task_is_its_task_details_as_the_listing_has_them() -> None:
    door = with_tasks(make_door())
    status, body, _ = asyncio.run(get(door, f"/api/tasks/{task_id(2)}"))
    assert (status, body) == (200, rpc_result(door, "Host.getAllTasks", {})[task_id(2)])


def test_an_unknown_task_is_404_with_code_401_and_vdsm_message() -> None:
    status, body, _ = asyncio.run(get(make_door(), f"/api/tasks/{UNKNOWN}"))
    assert (status, body) == (404, {"code": 401, "message": f"Task id unknown: ('{UNKNOWN}',)"})


def test_a_task_id_that_is_not_a_uuid_is_400_with_code_1000() -> None:
    status, body, _ = asyncio.run(get(make_door(), "/api/tasks/nope"))
    assert (status, body) == (400, {"code": 1000, "message": "Invalid parameter: ('taskID', 'nope')"})


def test_an_rpc_without_reply_is_504_with_code_100_at_its_deadline() -> None:
    door = make_door(timeout_s=0.5)
    door.bridge.answer = False
    with Stopwatch() as watch:
        status, body, _ = asyncio.run(get(door, "/api/tasks"))
    assert (status, body) == (
        504,
        {"code": 100, "message": "General Exception: no reply to Host.getAllTasks within 0.5s"},
    )
    assert_ended_at(watch, 0.5)
    assert door.door.caller.pending == 0  # the stale reply, if any, would be dropped


def test_before_the_front_door_reached_the_broker_calls_are_503() -> None:
    status, body, _ = asyncio.run(get(make_door(connected=False), "/api/tasks"))
    assert status == 503
    assert body["code"] == 100
    assert "has not reached the broker yet" in body["message"]


# -- control ------------------------------------------------------------------------------


def test_control_is_off_by_default_config_says_so_and_stop_is_403() -> None:
    door = with_tasks(make_door())
    assert asyncio.run(get(door, "/api/config"))[:2] == (200, {"control": False, "authorization": False})
    status, body, _ = asyncio.run(
        post(door, f"/api/tasks/{task_id(1)}/stop", headers={"Authorization": f"Bearer {TOKEN}"})
    )
    assert (status, body["code"]) == (403, 100)
    assert door.bridge.forwarded == []


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-of-the-test", f"Basic {TOKEN}", TOKEN])
def test_control_without_the_right_bearer_token_is_401_and_nothing_is_sent(authorization: str | None) -> None:
    door = with_tasks(make_door(options=HttpOptions(control_token=SecretStr(TOKEN))))
    headers = {"Authorization": authorization} if authorization else {}
    status, body, response_headers = asyncio.run(post(door, f"/api/tasks/{task_id(1)}/stop", headers=headers))
    assert (status, body["code"]) == (401, 100)
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in body["message"]
    assert door.bridge.forwarded == []


def test_stop_with_the_token_goes_through_task_stop_to_the_owner() -> None:
    door = with_tasks(make_door(options=HttpOptions(control_token=SecretStr(TOKEN))))
    assert asyncio.run(get(door, "/api/config"))[:2] == (200, {"control": True, "authorization": False})
    status, body, _ = asyncio.run(
        post(door, f"/api/tasks/{task_id(2)}/stop", headers={"Authorization": f"Bearer {TOKEN}"})
    )
    assert (status, body) == (200, True)
    assert [(f.command, f.task_id, f.subsystem) for f in door.bridge.forwarded] == [
        ("stop", task_id(2), "gluster")
    ]


def test_clear_with_the_token_follows_the_rpc_rules_409_while_running_then_gone_when_done() -> None:
    door = with_tasks(make_door(options=HttpOptions(control_token=SecretStr(TOKEN))))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body, _ = asyncio.run(post(door, f"/api/tasks/{task_id(1)}/clear", headers=auth))
    assert (status, body["code"]) == (409, 410)

    assert asyncio.run(post(door, f"/api/tasks/{task_id(3)}/clear", headers=auth))[:2] == (200, True)
    assert task_id(3) not in door.view
    assert asyncio.run(get(door, f"/api/tasks/{task_id(3)}"))[0] == 404


# -- health and metrics ---------------------------------------------------------------------


def test_healthz_is_200_only_when_the_aggregator_and_the_front_door_are_connected() -> None:
    door = make_door()
    assert asyncio.run(get(door, "/healthz"))[:2] == (200, {"status": "serving"})

    door.facts.problem_now = "the aggregator's broker connection is down"
    assert asyncio.run(get(door, "/healthz"))[:2] == (
        503,
        {"status": "unavailable", "reason": "the aggregator's broker connection is down"},
    )
    door.facts.problem_now = None
    door.bridge.recovering = True
    status, body, _ = asyncio.run(get(door, "/healthz"))
    assert (status, body["reason"]) == (503, "the http front door's broker connection is down")


def test_readyz_is_200_once_the_aggregator_is_ready_and_the_mirror_listed() -> None:
    door = make_door()
    door.facts.ready_now = False
    assert asyncio.run(get(door, "/readyz"))[0] == 503
    door.facts.ready_now = True
    status, body, _ = asyncio.run(get(door, "/readyz"))
    assert (status, body["reason"]) == (503, "the http front door has not listed the tasks yet")
    door.mirror.listing(0, {})
    assert asyncio.run(get(door, "/readyz"))[:2] == (200, {"status": "ready"})


def test_metrics_are_the_registry_in_prometheus_text_format() -> None:
    registry = CollectorRegistry()
    events = Counter("bus_tasks_events", "Events handled.", ["outcome"], registry=registry)
    events.labels("applied").inc(3)

    async def scrape() -> tuple[int, str, str]:
        async with serving(make_door(registry=registry).door) as session, session.get("/metrics") as response:
            return response.status, response.headers["Content-Type"], await response.text()

    status, content_type, text = asyncio.run(scrape())
    assert (status, content_type) == (200, CONTENT_TYPE_LATEST)
    assert 'bus_tasks_events_total{outcome="applied"} 3.0\n' in text


# -- the web view ---------------------------------------------------------------------------


def test_the_web_view_is_served_at_the_root_and_its_files_by_name_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "app.js").write_text("export {};")
    (tmp_path.parent / "secret.txt").write_text("no")

    async def fetch(path: str) -> tuple[int, str, dict[str, str]]:
        async with serving(make_door(web_dir=tmp_path).door) as session, session.get(path) as response:
            return response.status, await response.text(), dict(response.headers)

    status, text, headers = asyncio.run(fetch("/"))
    assert (status, text) == (200, "<!doctype html><title>t</title>")
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert asyncio.run(fetch("/app.js"))[:2] == (200, "export {};")
    assert asyncio.run(fetch("/app.css"))[0] == 404  # not there
    assert asyncio.run(fetch("/../secret.txt"))[0] == 404
    assert asyncio.run(fetch("/%2e%2e/secret.txt"))[0] == 404


def test_the_shipped_web_view_is_found() -> None:
    async def fetch() -> tuple[int, str]:
        async with serving(make_door().door) as session, session.get("/") as response:
            return response.status, await response.text()

    status, text = asyncio.run(fetch())
    assert status == 200
    assert "app.js" in text


def test_the_errors_of_every_route_have_the_same_form() -> None:
    door = make_door(timeout_s=0.3)
    door.bridge.answer = False

    async def both() -> list[tuple[int, Any]]:
        async with serving(door.door) as session:
            results = []
            for path in (f"/api/tasks/{UNKNOWN}", "/api/tasks?match=x"):
                async with session.get(path) as response:
                    results.append((response.status, codec.loads(await response.read())))
            return results

    for _, body in asyncio.run(both()):
        assert set(body) == {"code", "message"}
        assert isinstance(body["code"], int)
        assert isinstance(body["message"], str)
