"""``/openapi.json`` describes what a real ``bus-tasks serve --http`` answers: schemathesis sends
generated requests to every operation (the endless watch stream aside) and checks each response's
status code, content type and JSON schema against the document, a bounded number of examples each."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from support.brokers import RABBITMQ, rabbitmqctl, require_service
from support.processes import BIN, Process

from bus_tasks.frontdoors.http.openapi import DOCUMENT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

READY_S = 30.0
EXAMPLES = 25
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real serve --http on a vhost of its own, with a few tasks: its base URL."""
    require_service("RabbitMQ", RABBITMQ)
    vhost = f"bus_tasks_openapi_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    data = tmp_path_factory.mktemp("openapi")
    argv = [str(BIN / "bus-tasks"), "serve", "--broker", url]
    argv += ["--data-dir", str(data), "--http", "127.0.0.1:0"]
    process = Process(argv, env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO"})
    try:
        base = process.wait_for_http(timeout_s=READY_S)
        process.wait_for_line("aggregator ready", timeout_s=READY_S)
        for state, tag in (("running", "spm"), ("finished", "gluster")):
            inject = ["--broker", url, "--tag", tag, "--state", state, "--count", "2"]
            subprocess.run(
                [str(BIN / "bus-tasks"), "inject", *inject],
                check=True,
                capture_output=True,
                timeout=60,
            )
        yield base
    finally:
        process.kill()
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def api(served: str) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json")
    schema.config.update(base_url=served)
    return schema


def test_the_document_served_is_the_one_shipped(served: str) -> None:
    with _NO_PROXY.open(f"{served}/openapi.json", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        assert json.loads(response.read()) == json.loads(DOCUMENT.read_text())


def _operations() -> list[str]:
    document = json.loads(DOCUMENT.read_text())
    return [f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item]


# The operations are listed from the document shipped (schemathesis' own pytest loader needs the
# server at collection time); each is then read from the live one.
@pytest.mark.parametrize("label", [label for label in _operations() if label != "GET /api/watch"])
def test_every_operation_answers_as_the_document_says(api: schemathesis.BaseSchema, label: str) -> None:
    operation = api.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the document served"

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def answers_as_documented(case: schemathesis.Case[Any]) -> None:
        # A continue token is the server's own (a digest of the listing): none generated can be
        # valid, so it is not sent; paging is tested with real tokens in test_http.py.
        if case.query:
            case.query.pop("continue", None)
        case.call_and_validate(timeout=20)

    answers_as_documented()
