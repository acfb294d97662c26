"""The locks (``make lock``) pin, with hashes, every dependency pyproject.toml asks for.

``make venv`` installs requirements/dev.txt (the runtime and the extras the Makefile's
``LOCKED_EXTRAS`` names), ``make soak`` and ``make fuzz`` requirements/tools.txt (those and the soak and fuzz extras), the
Dockerfile requirements/runtime.txt; pip itself checks at install time that each lock is closed
(``--require-hashes`` refuses an unpinned dependency).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "requirements" / "dev.txt"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
TOOLS_LOCK = ROOT / "requirements" / "tools.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)$")


def locked(path: Path) -> dict[NormalizedName, tuple[Version, int]]:
    """Name -> (pinned version, number of sha256 hashes) of each entry of a lock."""
    text = path.read_text().replace("\\\n", " ")
    pins: dict[NormalizedName, tuple[Version, int]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.fullmatch(line)
        assert match is not None, f"{path.name}: not a pinned, hashed entry: {line[:120]}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = (Version(match.group(2)), match.group(3).count("--hash="))
    return pins


def locked_extras() -> list[str]:
    """The extras ``make venv`` installs, as the Makefile names them."""
    match = re.search(r"^LOCKED_EXTRAS\s*:?=(.*)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert match is not None, "the Makefile names no LOCKED_EXTRAS"
    return match.group(1).split()


def wanted(extras: list[str]) -> list[Requirement]:
    """pyproject.toml's runtime dependencies and those of ``extras``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = set(extras) - set(optional)
    assert not unknown, f"the Makefile installs extras pyproject.toml lacks: {sorted(unknown)}"
    return [Requirement(r) for r in [*project["dependencies"], *(r for e in extras for r in optional[e])]]


def uncovered(requirements: list[Requirement], pins: dict[NormalizedName, tuple[Version, int]]) -> list[str]:
    """The requirements a lock leaves out or pins outside their range."""
    missing = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None or not requirement.specifier.contains(pin[0], prereleases=True):
            missing.append(f"{requirement} (locked: {pin[0] if pin else 'no'})")
    return missing


def test_the_dev_lock_covers_the_runtime_and_every_extra_make_installs() -> None:
    extras = locked_extras()
    assert "test" in extras
    assert uncovered(wanted(extras), locked(DEV_LOCK)) == []


def test_the_soak_lock_covers_what_the_dev_lock_covers_and_the_soak_extra() -> None:
    assert uncovered(wanted([*locked_extras(), "soak", "fuzz"]), locked(TOOLS_LOCK)) == []


def test_the_runtime_lock_covers_every_runtime_dependency_and_no_extra() -> None:
    runtime = locked(RUNTIME_LOCK)
    assert uncovered(wanted([]), runtime) == []
    assert "pytest" not in runtime


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [(RUNTIME_LOCK, DEV_LOCK), (DEV_LOCK, TOOLS_LOCK)],
    ids=["runtime-dev", "dev-tools"],
)
def test_a_smaller_lock_pins_the_versions_the_larger_one_pins(smaller: Path, larger: Path) -> None:
    small = locked(smaller)
    large = locked(larger)
    assert set(small) <= set(large)
    assert {name: pin[0] for name, pin in small.items()} == {name: large[name][0] for name in small}


@pytest.mark.parametrize("lock", [DEV_LOCK, TOOLS_LOCK, RUNTIME_LOCK], ids=lambda path: path.name)
def test_every_locked_version_carries_a_hash(lock: Path) -> None:
    pins = locked(lock)
    assert pins
    assert sorted(name for name, (_, hashes) in pins.items() if hashes == 0) == []


def test_uncovered_reports_a_missing_dependency_and_a_pin_out_of_range() -> None:
    pins = {canonicalize_name("kombu"): (Version("4.6"), 1)}
    assert uncovered(
        [Requirement("kombu>=5.4"), Requirement("orjson"), Requirement("x; python_version<'3'")], pins
    ) == [
        "kombu>=5.4 (locked: 4.6)",
        "orjson (locked: no)",
    ]
