"""bus_tasks/frontdoors/http/openapi.json: a valid OpenAPI document naming every route the HTTP front
door has (the web view's files aside), with the task states of the code (its answers are checked
against a live server by schemathesis in tests/integration/test_openapi.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis
from schemathesis.core.result import Ok
from test_http_support import make_door

from bus_tasks.core.model import LEGACY_STATE, State
from bus_tasks.frontdoors.http.openapi import DOCUMENT

WEB_VIEW = {"/", "/{name}"}  # the page and its files: not an API


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return document


def _route_template(path: str) -> str:
    """aiohttp's ``/api/tasks/{task_id}/{action:stop|clear}`` as OpenAPI writes it."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def test_the_document_loads_as_openapi_3_with_an_operation_id_each() -> None:
    schema = schemathesis.openapi.from_dict(_document())
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    ids = [operation.definition.raw.get("operationId") for operation in operations]
    assert None not in ids
    assert len(set(ids)) == len(ids) == 10


def test_every_route_of_the_front_door_is_described_with_its_methods() -> None:
    app = make_door().door.application()
    routes: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path is not None:
            routes.setdefault(_route_template(path), set()).add(route.method.lower())
    for web_path in WEB_VIEW:
        routes.pop(web_path, None)
    described = {path: set(item) for path, item in _document()["paths"].items()}
    assert described == routes


def test_task_states_are_the_code_s() -> None:
    properties = _document()["components"]["schemas"]["TaskDetails"]["properties"]
    assert properties["state"]["enum"] == [state.value for state in State]
    assert set(properties["taskState"]["enum"]) == {legacy for legacy, _ in LEGACY_STATE.values()}
    assert set(properties["taskResult"]["enum"]) == {result for _, result in LEGACY_STATE.values()}
