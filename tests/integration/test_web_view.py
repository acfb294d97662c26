"""The web view (issue 15) in a real headless Chromium, served by ``bus-tasks serve --http`` on the
real RabbitMQ: listing, filtering by tag chips and typed tags, live updates, 10,000 tasks."""

from __future__ import annotations

import json
import random
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support.brokers import Broker
from support.browser import artifacts_dir, headless_chromium
from support.cli_helpers import BusTasksProcess, cli_env
from support.ports import free_port

from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Locator, Page

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 30.0
LIVE_TIMEOUT_MS = 15_000  # an event published reaches the page within this
FILTER_TIMEOUT_MS = 10_000  # a click filters 10,000 tasks within this ("a few seconds")
MANY = 10_000
VOLUMES = 20  # the many tasks carry volume:gv0 .. volume:gv19, MANY / VOLUMES each
SERVING = re.compile(r"http serving on (http://\S+)")
AGE = re.compile(r"\d+[smhd]")
TOKEN = "web-view-test-token"  # serve wants 16 characters at least


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Served:
    """``bus-tasks serve --http`` on the test's vhost, and publishers on the same broker."""

    broker: Broker
    process: BusTasksProcess
    base_url: str

    def publisher(self, subsystem: str) -> TaskPublisher:
        return TaskPublisher(self.broker.connection(), subsystem)


@contextmanager
def serving(broker: Broker, tmp_path: Path, *, port: int = 0, **env: str) -> Iterator[Served]:
    """Serve, once its front door is ready; at the end, a clean stop (exit 0, no traceback)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    process = BusTasksProcess(
        "serve",
        "--broker",
        broker.url,
        "--http",
        f"127.0.0.1:{port}",
        cwd=tmp_path,
        env=cli_env(BUS_TASKS_DATA_DIR=str(data_dir), BUS_TASKS_LOG_LEVEL="INFO", **env),
    )
    try:
        process.wait_for_line("aggregator ready", timeout_s=READY_TIMEOUT_S)
        line = process.lines[process.wait_for_line("http serving on", timeout_s=READY_TIMEOUT_S)]
        found = SERVING.search(line)
        assert found is not None, line
        base_url = found.group(1).rstrip("/")
        wait_until(lambda: _ready(base_url), timeout_s=READY_TIMEOUT_S, what=f"{base_url}/readyz")
        yield Served(broker, process, base_url)
        assert process.terminate() == 0, process.log
        assert "Traceback" not in process.log, process.log
    finally:
        process.kill()


@pytest.fixture
def served(rabbitmq_broker: Broker, tmp_path: Path) -> Iterator[Served]:
    with serving(rabbitmq_broker, tmp_path) as running:
        yield running


@pytest.fixture
def served_with_control(rabbitmq_broker: Broker, tmp_path: Path) -> Iterator[Served]:
    with serving(
        rabbitmq_broker, tmp_path, BUS_TASKS_HTTP_CONTROL="true", BUS_TASKS_HTTP_TOKEN=TOKEN
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with headless_chromium() as launched:
        yield launched


@dataclass
class WebPage:
    """One browser page and what went wrong in it (uncaught errors, console errors)."""

    page: Page
    errors: list[str]

    def rows(self) -> Locator:
        return self.page.locator("#viewport [data-task-id]")

    def row(self, task_id: str) -> Locator:
        return self.page.locator(f'#viewport [data-task-id="{task_id}"]')

    def shown_ids(self) -> set[str]:
        return set(self.rows().evaluate_all("rows => rows.map(r => r.dataset.taskId)"))

    def cells(self, task_id: str) -> list[str]:
        """The texts of a row's cells, its age (it ticks) checked and left out."""
        *texts, age = self.row(task_id).get_by_role("cell").all_inner_texts()
        assert AGE.fullmatch(age), age
        return [text.strip() for text in texts]

    def revision(self) -> int:
        return int(self.page.locator("#revision").get_attribute("data-revision") or "-1")

    def open_details(self, task_id: str) -> None:
        self.row(task_id).get_by_role("button", name=f"details of task {task_id}", exact=True).click()

    def tags_of_rows(self) -> list[list[str]]:
        return self.rows().evaluate_all(  # type: ignore[no-any-return]
            "rows => rows.map(r => [...r.querySelectorAll('[data-tag]')].map(c => c.dataset.tag))"
        )


@pytest.fixture
def web(browser: Browser) -> Iterator[WebPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("console", console)
    try:
        yield WebPage(page, errors)
    finally:
        context.close()


def _expect() -> Any:
    """Playwright's ``expect``, imported late: without playwright the browser fixture skips (or
    fails, on CI) with its reason instead of the module failing to import."""
    from playwright.sync_api import expect

    return expect


def _screenshot(web: WebPage, tmp_path: Path, name: str) -> Path:
    path = artifacts_dir(tmp_path) / name
    web.page.screenshot(path=str(path))
    assert path.stat().st_size > 0
    return path


def test_the_page_lists_every_task_filters_by_chip_and_typed_tags_and_follows_changes_without_reloading(
    web: WebPage, served: Served, tmp_path: Path
) -> None:
    expect = _expect()
    vdsm, gluster = served.publisher("vdsm"), served.publisher("gluster")
    copy = vdsm.create("copyImage", ["spm"], state="running", message="copying", progress=10)
    download = vdsm.create("downloadImage", ["hsm"], state="init")
    rebalance = gluster.create("rebalance", ["gluster", "volume:gv1"], state="running", progress=40)
    vdsm.flush(10)
    gluster.flush(10)

    page = web.page
    page.goto(served.base_url + "/")
    expect(web.rows()).to_have_count(3, timeout=LIVE_TIMEOUT_MS)
    assert web.shown_ids() == {copy.id, download.id, rebalance.id}
    assert web.cells(copy.id) == [copy.id[:8], "vdsm", "copyImage", "spm", "running", "10%", "copying"]
    assert web.cells(download.id) == [download.id[:8], "vdsm", "downloadImage", "hsm", "init", "", ""]
    assert web.cells(rebalance.id) == [
        rebalance.id[:8], "gluster", "rebalance", "gluster\nvolume:gv1", "running", "40%", ""
    ]  # fmt: skip
    expect(page.locator("#shown-count")).to_have_attribute("data-shown-count", "3")
    counts = page.locator("#state-counts [data-group]")
    expect(counts).to_have_count(2)
    assert counts.evaluate_all("cs => cs.map(c => [c.dataset.group, c.dataset.count])") == [
        ["running", "2"],
        ["pending", "1"],
    ]
    # Control is off: no token box, and a task's details offer no stop or clear.
    expect(page.locator("#token-box")).to_be_hidden()
    web.open_details(copy.id)
    expect(page.locator("#details")).to_be_visible()
    expect(page.locator("#details-actions")).to_be_hidden()
    page.keyboard.press("Escape")
    expect(page.locator("#details")).to_be_hidden()
    page.evaluate("window.busTasksMarker = 'still the same page'")

    # A tag chip filters to its tasks; clicking it again takes the filter away.
    web.row(rebalance.id).locator('[data-tag="gluster"]').click()
    expect(web.rows()).to_have_count(1)
    assert web.shown_ids() == {rebalance.id}
    expect(page.locator("#shown-count")).to_have_attribute("data-shown-count", "1")
    expect(page.locator("#tag-input")).to_have_value("gluster")
    expect(web.row(rebalance.id).locator('[data-tag="gluster"]')).to_have_attribute("aria-pressed", "true")
    web.row(rebalance.id).locator('[data-tag="gluster"]').click()
    expect(web.rows()).to_have_count(3)

    # Typed tags: any of them, then all of them.
    page.get_by_label("Tags", exact=True).fill("spm hsm")
    expect(web.rows()).to_have_count(2)
    assert web.shown_ids() == {copy.id, download.id}
    page.get_by_label("all", exact=True).check()
    expect(web.rows()).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    page.get_by_label("Tags", exact=True).fill("gluster volume:gv1")
    expect(web.rows()).to_have_count(1)
    assert web.shown_ids() == {rebalance.id}
    page.get_by_label("any", exact=True).check()
    page.get_by_label("Tags", exact=True).fill("spm, hsm")
    expect(web.rows()).to_have_count(2)

    # Changes arrive live: a task's progress, a new task of the selection, one outside it, a
    # failure, a clear.
    before = web.revision()
    vdsm.update(copy.id, progress=60, message="copying 3 of 5")
    moved = vdsm.create("moveImage", ["hsm"], state="queued")
    gluster.create("heal", ["gluster"], state="running")
    vdsm.fail(download.id, code=100, message="disk full")
    vdsm.flush(10)
    gluster.flush(10)
    expect(web.row(copy.id).locator("[data-progress]")).to_have_attribute(
        "data-progress", "60", timeout=LIVE_TIMEOUT_MS
    )
    expect(web.row(moved.id)).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(web.row(download.id)).to_have_attribute("data-state", "failed", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#total-count")).to_have_attribute("data-total-count", "5", timeout=LIVE_TIMEOUT_MS)
    assert web.shown_ids() == {copy.id, download.id, moved.id}
    assert web.cells(copy.id) == [copy.id[:8], "vdsm", "copyImage", "spm", "running", "60%", "copying 3 of 5"]
    assert web.cells(download.id) == [
        download.id[:8],
        "vdsm",
        "downloadImage",
        "hsm",
        "failed",
        "",
        "disk full",
    ]
    assert web.cells(moved.id) == [moved.id[:8], "vdsm", "moveImage", "hsm", "queued", "", ""]
    assert web.revision() > before
    _screenshot(web, tmp_path, "web-view-live.png")

    vdsm.clear(download.id)
    vdsm.flush(10)
    expect(web.row(download.id)).to_have_count(0, timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#shown-count")).to_have_attribute("data-shown-count", "2")
    assert page.evaluate("window.busTasksMarker") == "still the same page"
    assert web.errors == []


def test_with_control_on_the_page_clears_a_finished_task_with_the_token_typed_once(
    web: WebPage, served_with_control: Served
) -> None:
    expect = _expect()
    vdsm = served_with_control.publisher("vdsm")
    done = vdsm.create("copyImage", ["spm"], state="running")
    vdsm.finish(done.id, message="copied")
    running = vdsm.create("downloadImage", ["spm"], state="running")
    vdsm.flush(10)

    page = web.page
    page.goto(served_with_control.base_url + "/")
    expect(web.rows()).to_have_count(2, timeout=LIVE_TIMEOUT_MS)
    expect(web.row(done.id)).to_have_attribute("data-state", "finished", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#token-box")).to_be_visible()
    web.open_details(running.id)
    expect(page.locator("#details-actions")).to_be_visible()
    expect(page.get_by_role("button", name="Clear", exact=True)).to_be_disabled()  # not done yet

    web.open_details(done.id)
    clear = page.get_by_role("button", name="Clear", exact=True)
    expect(clear).to_be_enabled()
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_disabled()  # already done
    clear.click()
    expect(page.locator("#action-result")).to_have_text("Enter the control token first.")
    page.get_by_label("Control token", exact=True).fill("not-the-token")
    clear.click()
    expect(page.locator("#action-result")).to_contain_text("clear refused")
    expect(web.row(done.id)).to_have_count(1)
    page.get_by_label("Control token", exact=True).fill(TOKEN)
    clear.click()
    expect(web.row(done.id)).to_have_count(0, timeout=LIVE_TIMEOUT_MS)
    assert web.shown_ids() == {running.id}
    assert page.evaluate("sessionStorage.getItem('bus_tasks.control_token')") == TOKEN
    # The refused attempt was answered 401: the browser logs that one failed request.
    assert [e for e in web.errors if "401" not in e] == []


class Stream:
    """Progress changes of random tasks, published in a thread until stopped."""

    def __init__(self, publisher: TaskPublisher, task_ids: list[str]) -> None:
        self.publisher = publisher
        self.task_ids = task_ids
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        chooser = random.Random(15)
        try:
            while not self._stop.wait(0.005):
                self.publisher.update(chooser.choice(self.task_ids), progress=chooser.randrange(101))
                self.sent += 1
        except BaseException as exc:  # re-raised in the test's thread by __exit__
            self.error = exc

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.mark.timeout(300)
def test_ten_thousand_tasks_load_and_a_chip_click_filters_them_while_changes_stream_in(
    web: WebPage, served: Served, tmp_path: Path
) -> None:
    expect = _expect()
    vdsm = served.publisher("vdsm")
    states = ("running", "queued", "finished", "failed", "aborting", "recovering")
    tagged: dict[str, list[str]] = {f"volume:gv{v}": [] for v in range(VOLUMES)}
    for i in range(MANY):
        volume = f"volume:gv{i % VOLUMES}"
        task = vdsm.create(
            "copyImage" if i % 3 else "moveImage",
            ["spm" if i % 2 else "hsm", volume],
            state=states[i % len(states)],
            message=f"job {i}",
            progress=i % 101,
        )
        tagged[volume].append(task.id)
    vdsm.flush(60)
    wait_until(
        lambda: len(get_json(f"{served.base_url}/api/tasks")) == MANY,
        timeout_s=120,
        interval_s=0.5,
        what=f"{MANY} tasks in the view",
    )

    page = web.page
    page.goto(served.base_url + "/")
    expect(page.locator("#total-count")).to_have_attribute("data-total-count", str(MANY), timeout=60_000)
    expect(page.locator("#shown-count")).to_have_attribute("data-shown-count", str(MANY))
    # Only the rows in sight are in the document, so the page stays light.
    assert 0 < web.rows().count() < 100
    _screenshot(web, tmp_path, "web-view-10000-all.png")
    page.evaluate("window.busTasksMarker = 'still the same page'")

    everything = [task_id for ids in tagged.values() for task_id in ids]
    with Stream(vdsm, everything) as stream:
        chip = web.rows().first.locator('[data-tag^="volume:"]')
        tag = chip.get_attribute("data-tag")
        assert tag is not None
        chip.click()
        expected = MANY // VOLUMES
        expect(page.locator("#shown-count")).to_have_attribute(
            "data-shown-count", str(expected), timeout=FILTER_TIMEOUT_MS
        )
        shown_tags = web.tags_of_rows()
        assert shown_tags
        assert all(tag in tags for tags in shown_tags), shown_tags
        assert web.shown_ids() <= set(tagged[tag])

        # The last of the filtered rows is reached by scrolling, and is one of them.
        page.locator("#viewport").evaluate("v => { v.scrollTop = v.scrollHeight; }")
        last = page.locator(f'#viewport [aria-rowindex="{expected + 1}"]')
        expect(last).to_be_visible(timeout=FILTER_TIMEOUT_MS)
        assert last.get_attribute("data-task-id") in tagged[tag]

        # Back at the top, a change to a task in sight shows up while the stream goes on.
        page.locator("#viewport").evaluate("v => { v.scrollTop = 0; }")
        top = page.locator('#viewport [aria-rowindex="2"]')
        expect(top).to_be_visible()
        task_id = top.get_attribute("data-task-id")
        assert task_id is not None
        vdsm.update(task_id, message="seen while changes stream in")
        expect(web.row(task_id).get_by_role("cell").nth(6)).to_have_text(
            "seen while changes stream in", timeout=LIVE_TIMEOUT_MS
        )
        _screenshot(web, tmp_path, "web-view-10000.png")
    assert stream.sent > 0
    assert page.evaluate("window.busTasksMarker") == "still the same page"
    assert web.errors == []


def test_the_page_reconnects_by_itself_after_serve_restarts_and_shows_what_changed_meanwhile(
    rabbitmq_broker: Broker, web: WebPage, tmp_path: Path
) -> None:
    expect = _expect()
    port = free_port()
    with serving(rabbitmq_broker, tmp_path, port=port) as served:
        vdsm = served.publisher("vdsm")
        task = vdsm.create("copyImage", ["spm"], state="running", progress=20)
        vdsm.flush(10)
        page = web.page
        page.goto(served.base_url + "/")
        expect(web.row(task.id).locator("[data-progress]")).to_have_attribute(
            "data-progress", "20", timeout=LIVE_TIMEOUT_MS
        )
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        page.evaluate("window.busTasksMarker = 'still the same page'")

    expect(page.locator("#connection")).to_have_attribute(
        "data-state", re.compile("reconnecting|offline"), timeout=LIVE_TIMEOUT_MS
    )
    vdsm.update(task.id, progress=70, message="went on while nobody served")
    added = vdsm.create("moveImage", ["hsm"], state="queued")
    vdsm.flush(10)

    with serving(rabbitmq_broker, tmp_path, port=port):
        expect(web.row(task.id).locator("[data-progress]")).to_have_attribute(
            "data-progress", "70", timeout=LIVE_TIMEOUT_MS
        )
        expect(web.row(added.id)).to_be_visible(timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        assert web.shown_ids() == {task.id, added.id}
        assert page.evaluate("window.busTasksMarker") == "still the same page"
    # While serve was down the browser logged its refused reconnections, nothing else.
    assert [e for e in web.errors if "ERR_CONNECTION_REFUSED" not in e] == []


def _chips_whole(web: WebPage, task_id: str) -> dict[str, bool]:
    """Each tag chip of a row: whether its whole text shows (not cut to "gl…")."""
    return dict(
        web.row(task_id)
        .locator(".chip")
        .evaluate_all("chips => chips.map(c => [c.dataset.tag, c.scrollWidth <= c.clientWidth])")
    )


def test_with_the_details_open_the_tag_chips_stay_whole_and_at_800_px_the_id_column_stays(
    web: WebPage, served: Served, tmp_path: Path
) -> None:
    expect = _expect()
    gluster = served.publisher("gluster")
    rebalance = gluster.create("rebalance", ["gluster", "volume:gv-backups-01"], state="running", progress=40)
    gluster.flush(10)
    page = web.page
    page.goto(served.base_url + "/")
    expect(web.rows()).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
    web.open_details(rebalance.id)
    expect(page.locator("#details")).to_be_visible()
    assert _chips_whole(web, rebalance.id) == {"gluster": True, "volume:gv-backups-01": True}
    _screenshot(web, tmp_path, "details-open-chips.png")

    page.set_viewport_size({"width": 800, "height": 800})
    page.locator("#details-close").click()
    id_cell = web.row(rebalance.id).locator(".c-id")
    expect(id_cell).to_be_visible()
    assert id_cell.inner_text().strip() == rebalance.id[:8]
    assert page.locator(".head .c-id").is_visible()
    _screenshot(web, tmp_path, "narrow-800.png")
    assert web.errors == []


def test_a_state_chip_says_which_states_it_counts_and_filters_and_the_subsystem_choice_filters(
    web: WebPage, served: Served, tmp_path: Path
) -> None:
    expect = _expect()
    vdsm, gluster = served.publisher("vdsm"), served.publisher("gluster")
    copy = vdsm.create("copyImage", ["spm"], state="acquiring")
    download = vdsm.create("downloadImage", ["hsm"], state="finished")
    rebalance = gluster.create("rebalance", ["gluster", "volume:gv1"], state="running")
    vdsm.flush(10)
    gluster.flush(10)
    page = web.page
    page.goto(served.base_url + "/")
    expect(web.rows()).to_have_count(3, timeout=LIVE_TIMEOUT_MS)

    running = page.locator('#state-counts button[data-group="running"]')
    expect(running).to_have_text("running 2")  # acquiring is the engine's "running" (SPEC 3)
    assert "acquiring" in (running.get_attribute("title") or "")
    running.click()
    expect(web.rows()).to_have_count(2)
    assert web.shown_ids() == {copy.id, rebalance.id}
    assert running.get_attribute("aria-pressed") == "true"
    assert "state=running" in page.url
    running.click()
    expect(web.rows()).to_have_count(3)

    choice = page.locator("#subsystem-select")
    expect(choice.locator("option")).to_have_text(["all", "gluster", "vdsm"])
    choice.select_option("vdsm")
    expect(web.rows()).to_have_count(2)
    assert web.shown_ids() == {copy.id, download.id}
    assert "subsystem=vdsm" in page.url
    page.locator("#clear-filter").click()
    expect(web.rows()).to_have_count(3)
    _screenshot(web, tmp_path, "state-and-subsystem-filters.png")
    assert web.errors == []
