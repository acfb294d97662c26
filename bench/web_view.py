"""Figure ``web``: what the web view costs in a real headless Chromium at 100,000 tasks, against
the same page at 10,000 (the size its tests check): the first render (from ``goto`` to the
total count of every task shown) and a tag filter (a typed tag, to the count of its tasks).

``bus-tasks serve --http`` runs as a process on a vhost of this figure's own; its listing of
100,000 tasks is over ``max_reply_bytes``, so its front door's watch lists them in pages
(SPEC section 14). No target: the figure says what a larger view costs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.harness import Figure, Sizes, check, fmt_time, rabbitmq_vhost, say, wait_for
from bus_tasks import transport
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.transport import BusOptions

TASKS = Sizes(full=100_000, quick=3_000)
BASELINE_TASKS = Sizes(full=10_000, quick=1_000)
VOLUMES = 20
CHROMIUM = "/usr/bin/chromium"
TIMEOUT_S = 600.0
SERVING = re.compile(r"http serving on (http://\S+)")


def _populate(url: str, n: int) -> None:
    publisher = TaskPublisher(transport.open(url, BusOptions(confirm_publish=True)), "vdsm")
    try:
        for i in range(n):
            tags = ["spm" if i % 2 else "hsm", f"volume:gv{i % VOLUMES}"]
            publisher.create("copyImage", tags, state="running", message=f"job {i}", progress=i % 101)
        publisher.flush(TIMEOUT_S)
    finally:
        publisher.close()


def _serve(url: str, data_dir: str) -> tuple[subprocess.Popen[str], str]:
    serve = str(Path(sys.executable).with_name("bus-tasks"))
    process = subprocess.Popen(
        [serve, "serve", "--broker", url, "--http", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60.0
    for line in process.stdout:
        found = SERVING.search(line)
        if found:
            return process, found.group(1).rstrip("/")
        check(time.monotonic() < deadline, "serve did not say where it serves HTTP within 60s")
    raise RuntimeError("serve exited before serving HTTP")


def _total(base: str) -> int:
    with urllib.request.urlopen(f"{base}/api/tasks?limit=1", timeout=30) as response:
        return int(response.headers.get("X-Bus-Tasks-Revision", "0"))


def measure(n: int) -> tuple[float, float]:
    """(first render, filter) in seconds for a view of ``n`` tasks."""
    from playwright.sync_api import sync_playwright  # only this figure needs it

    with rabbitmq_vhost("web") as url, tempfile.TemporaryDirectory() as data_dir:
        process, base = _serve(url, data_dir)
        try:
            _populate(url, n)
            wait_for(
                lambda: _total(base) >= n, timeout_s=TIMEOUT_S, what=f"{n} tasks applied", interval_s=0.5
            )
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                try:
                    page = browser.new_page()
                    started = time.perf_counter()
                    page.goto(base + "/")
                    page.wait_for_selector(f'#total-count[data-total-count="{n}"]', timeout=TIMEOUT_S * 1000)
                    page.wait_for_selector(f'#shown-count[data-shown-count="{n}"]', timeout=TIMEOUT_S * 1000)
                    render_s = time.perf_counter() - started
                    started = time.perf_counter()
                    page.fill("#tag-input", "volume:gv3")
                    page.press("#tag-input", "Enter")
                    shown = n // VOLUMES
                    page.wait_for_selector(
                        f'#shown-count[data-shown-count="{shown}"]', timeout=TIMEOUT_S * 1000
                    )
                    filter_s = time.perf_counter() - started
                finally:
                    browser.close()
        finally:
            process.terminate()
            process.wait(60)
    return render_s, filter_s


def run(quick: bool) -> list[Figure]:
    n, small = TASKS.pick(quick), BASELINE_TASKS.pick(quick)
    small_render, small_filter = measure(small)
    render, filtered = measure(n)
    say(f"  web {n:,}: first render {fmt_time(render)}, filter {fmt_time(filtered)}")
    return [
        Figure(
            f"web first render {n:,}",
            fmt_time(render),
            fmt_time(small_render),
            render / small_render,
            None,
            f"{n:,} tasks vs {small:,}",
            note="headless Chromium: goto to every task counted and shown (its watch lists in pages)",
        ),
        Figure(
            f"web filter {n:,}",
            fmt_time(filtered),
            fmt_time(small_filter),
            filtered / small_filter,
            None,
            f"{n:,} tasks vs {small:,}",
            note=f"a typed tag selecting 1 task in {VOLUMES}, to its count shown",
        ),
    ]
