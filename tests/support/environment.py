"""A process environment free of the caller's shell settings, for tests that read settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def without_settings(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    """No BUS_TASKS_* variable from the caller's shell, and ``workdir`` (no config/ in it) as the
    working directory; both restored by ``monkeypatch`` after the test."""
    for name in list(os.environ):
        if name.startswith("BUS_TASKS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(workdir)
