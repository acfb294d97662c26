"""A real headless Chromium for the web view's tests: found, installed when we may, or skipped.

Debian's ``chromium`` package is what CI installs (``.ci/run``); Playwright drives it through
``executable_path``, so no browser download is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from support.brokers import CI

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ENV = "BUS_TASKS_CHROMIUM"  # a browser binary to use instead of looking for one
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
_DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
INSTALL_TIMEOUT_S = 600.0


def _unavailable(reason: str) -> NoReturn:
    """Skip on a laptop; fail when CI is set (the browser tests must run there)."""
    if CI:
        pytest.fail(f"{reason} (CI is set: the web view's browser tests must run)")
    pytest.skip(reason)


def _found() -> str | None:
    if os.access(_DEBIAN_CHROMIUM, os.X_OK):
        return str(_DEBIAN_CHROMIUM)
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )


def _apt_install() -> str:
    """``apt-get install -y chromium`` (again after an update if it fails); "" or why it could not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "not root on a Debian-like system, so not installed"
    install = ("install", "-y", "--no-install-recommends", "chromium")
    done = _apt_get(*install)
    if done.returncode != 0 and _apt_get("update").returncode == 0:
        done = _apt_get(*install)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return f"apt-get install chromium failed: {tail[0]}"
    return ""


def chromium_path() -> str:
    """The Chromium binary to drive (``$BUS_TASKS_CHROMIUM``, or found, or installed with apt-get
    when missing and we are root). Skips the test when there is none; fails when CI is set."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        if not os.access(given, os.X_OK):
            _unavailable(f"${CHROMIUM_ENV} is not an executable: {given!r}")
        return given
    path = _found()
    if path is None:
        why = _apt_install()
        path = _found()
        if path is None:
            _unavailable(f"no Chromium found ({why or 'installed, yet not found on PATH'})")
    return path


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """A launched headless Chromium, closed at the end."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed: {exc}")
    executable = chromium_path()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=True)
        except Error as exc:
            _unavailable(f"{executable} does not start under Playwright: {exc.message.splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir(tmp_path: Path) -> Path:
    """Where a test leaves what a person looks at afterwards: ``$BUS_TASKS_ARTIFACTS`` or ``tmp_path``."""
    root = os.environ.get("BUS_TASKS_ARTIFACTS")
    directory = Path(root) if root else tmp_path / "artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory
