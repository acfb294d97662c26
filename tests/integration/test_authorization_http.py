"""Who may call what over HTTP (SPEC 16): ``bus-tasks serve --http`` with authorization on, on the
real RabbitMQ. Bearer tokens name the callers; 401 without one, 403 for a call the role does not
allow; health and metrics open and without task data. The web view in Chromium as a reader and
as an operator."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support.brokers import Broker
from test_web_view import LIVE_TIMEOUT_MS, Served, WebPage, _expect, serving
from test_web_view import browser as browser  # noqa: PLC0414 - the module's fixture, shared
from test_web_view import web as web  # noqa: PLC0414

from bus_tasks.core.model import State

if TYPE_CHECKING:
    from bus_tasks.subsystem.publisher import TaskPublisher

pytestmark = pytest.mark.integration

TOKENS = {
    "rita": "rita-reads-0123456789",
    "otto": "otto-operates-0123456789",
    "ada": "ada-administers-0123456789",
    "mallory": "mallory-has-no-role-0123",
}
# serve's own broker user (guest here) speaks for its HTTP clients, and reads for its watch.
ENV = {
    "BUS_TASKS_AUTHORIZATION": "on",
    "BUS_TASKS_READERS": json.dumps(["guest", "rita"]),
    "BUS_TASKS_OPERATORS": json.dumps(["otto"]),
    "BUS_TASKS_ADMINS": json.dumps(["ada"]),
    "BUS_TASKS_FRONT_DOORS": json.dumps(["guest"]),
    "BUS_TASKS_HTTP_TOKENS": json.dumps(TOKENS),
}


@pytest.fixture
def served(rabbitmq_broker: Broker, tmp_path: Path) -> Iterator[Served]:
    with serving(rabbitmq_broker, tmp_path, port=0, **ENV) as running:
        yield running


def request(served: Served, path: str, *, who: str | None = None, method: str = "GET") -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if who is not None:
        headers["Authorization"] = f"Bearer {TOKENS.get(who, who)}"
    req = urllib.request.Request(served.base_url + path, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as response:
            if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                return response.status, None  # a watch: its status is the answer here
            body = response.read()
            return response.status, json.loads(body) if path.startswith("/api") else body.decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def tasks(pub: TaskPublisher) -> tuple[str, str]:
    running = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    done = pub.create("copyImage", ["spm"], state=State.RUNNING).id
    pub.finish(done, message="copied")
    pub.flush(10)
    return running, done


def test_health_and_metrics_are_open_and_carry_no_task_data(served: Served) -> None:
    running, done = tasks(served.publisher("vdsm"))
    for path in ("/healthz", "/readyz", "/metrics"):
        status, body = request(served, path)
        assert status == 200, path
        assert running not in str(body)
        assert done not in str(body)


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/{running}", "/api/watch"])
def test_without_a_known_token_reading_is_401(served: Served, path: str) -> None:
    running, _ = tasks(served.publisher("vdsm"))
    for who in (None, "not-anybodys-token-0000"):
        status, body = request(served, path.format(running=running), who=who)
        assert status == 401, who
        assert set(body) == {"code", "message"}


@pytest.mark.parametrize(
    ("who", "reads", "stops", "clears"),
    [("rita", 200, 403, 403), ("otto", 200, 200, 200), ("ada", 200, 200, 200), ("mallory", 403, 403, 403)],
)
def test_each_identity_reads_and_controls_as_its_role_allows(
    served: Served, who: str, reads: int, stops: int, clears: int
) -> None:
    vdsm = served.publisher("vdsm")
    vdsm.on_stop(lambda task_id: None)
    running, done = tasks(vdsm)
    stop_control = served.broker.connection()
    stopping = threading.Event()
    vdsm.listen(stop_control)  # its control queue is there before the first stop is forwarded
    thread = threading.Thread(target=vdsm.serve_control, args=(stop_control, stopping), daemon=True)
    thread.start()
    try:
        assert request(served, "/api/tasks", who=who)[0] == reads
        assert request(served, f"/api/tasks/{running}", who=who)[0] == reads
        assert request(served, "/api/watch", who=who)[0] == reads

        status, body = request(served, f"/api/tasks/{running}/stop", who=who, method="POST")
        assert status == stops, body
        if stops == 403:
            assert body == {"code": -32011, "message": f"Permission denied: {who} may not call Task.stop"}
            assert request(served, f"/api/tasks/{running}", who="ada")[1]["state"] == "running"

        status, body = request(served, f"/api/tasks/{done}/clear", who=who, method="POST")
        assert status == clears, body
        assert (request(served, f"/api/tasks/{done}", who="ada")[0] == 404) is (clears == 200)
    finally:
        stopping.set()
        thread.join(10)


def test_whoami_names_the_caller_its_role_and_its_calls(served: Served) -> None:
    assert request(served, "/api/whoami") == (
        200,
        {"authorization": "on", "identity": None, "role": None, "calls": []},
    )
    status, rita = request(served, "/api/whoami", who="rita")
    assert (status, rita["identity"], rita["role"]) == (200, "rita", "reader")
    assert "Task.stop" not in rita["calls"]
    assert "Task.getStatus" in rita["calls"]
    status, otto = request(served, "/api/whoami", who="otto")
    assert (otto["role"], "Task.stop" in otto["calls"], "Task.retag" in otto["calls"]) == (
        "operator",
        True,
        False,
    )
    assert request(served, "/api/whoami", who="mallory")[1]["calls"] == []
    assert request(served, "/api/whoami", who="no-such-token-00000")[0] == 401


# -- the web view ------------------------------------------------------------------------------


def open_as(web: WebPage, served: Served, who: str) -> None:
    """Open the page with ``who``'s token already in the tab (as typed in an earlier visit)."""
    web.page.add_init_script(f"sessionStorage.setItem('bus_tasks.control_token', {json.dumps(TOKENS[who])})")
    web.page.goto(served.base_url + "/")


def test_the_web_view_as_a_reader_shows_who_is_looking_and_offers_no_control(
    web: WebPage, served: Served
) -> None:
    expect = _expect()
    _, done = tasks(served.publisher("vdsm"))
    open_as(web, served, "rita")
    expect(web.rows()).to_have_count(2, timeout=LIVE_TIMEOUT_MS)
    whoami = web.page.locator("#whoami")
    expect(whoami).to_have_attribute("data-role", "reader")
    expect(whoami).to_have_text("rita (reader)")
    web.open_details(done)
    expect(web.page.locator("#details")).to_be_visible()
    expect(web.page.locator("#details-actions")).to_be_hidden()
    assert web.errors == []


def test_the_web_view_as_an_operator_offers_clear_and_it_works(web: WebPage, served: Served) -> None:
    expect = _expect()
    running, done = tasks(served.publisher("vdsm"))
    open_as(web, served, "otto")
    expect(web.rows()).to_have_count(2, timeout=LIVE_TIMEOUT_MS)
    expect(web.page.locator("#whoami")).to_have_text("otto (operator)")
    expect(web.row(done)).to_have_attribute("data-state", "finished", timeout=LIVE_TIMEOUT_MS)
    web.open_details(done)
    expect(web.page.locator("#details-actions")).to_be_visible()
    web.page.get_by_role("button", name="Clear", exact=True).click()
    expect(web.page.locator("#action-result")).to_have_text("clear sent")
    expect(web.rows()).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
    assert web.shown_ids() == {running}
    assert web.errors == []
