"""Command-line tools some tests run (promtool, systemd-analyze, prometheus): skip without them on
a laptop, fail when CI is set (``.ci/run`` installs them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.brokers import CI


def require_tool(name: str, package: str) -> Path:
    """The path of the executable ``name`` (from the Debian package ``package``)."""
    found = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    if found is not None:
        return Path(found)
    message = f"{name} is not installed (Debian package {package})"
    if CI:
        pytest.fail(f"{message} (CI is set: .ci/run installs it)")
    pytest.skip(message)
