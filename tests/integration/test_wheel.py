"""The wheel, as a user gets it: built from the sources alone, installed in a fresh venv outside
the checkout from the runtime lock, then ``bus-tasks --version``, ``demo`` and ``serve --http``
(the web view and its assets) run from a directory that is not the checkout.

Slow (a venv and an install, from pip's cache), so one module and one install for all its tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.cli_helpers import cli_env, parse_table, run_cli
from support.processes import Process

from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# What a build needs, as the Dockerfile copies it: nothing else of the checkout reaches the wheel.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "bus_tasks")
WEB = "bus_tasks/frontdoors/http/web"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DIST_INFO = f"bus_tasks-{VERSION}.dist-info"
INSTALL_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 30.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# The web view's own files that index.html and the scripts load (relative references only).
_ASSET_REF = re.compile(r"""(?:href|src)="([\w.-]+\.\w+)"|from\s+"\./([\w.-]+\.js)\"""")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    work: Path  # an empty working directory, outside the checkout

    @property
    def bus_tasks(self) -> Path:
        return self.venv / "bin" / "bus-tasks"

    def run(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bus_tasks), *args],
            cwd=self.work,
            env=outside_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def python(self, code: str) -> str:
        """What ``code`` prints, run by the venv's interpreter."""
        done = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code],
            cwd=self.work,
            env=outside_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout


def outside_env() -> dict[str, str]:
    """No ``BUS_TASKS_*`` setting, and nothing that would lead Python back to the checkout."""
    leads = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in cli_env().items() if k not in leads}


def step(argv: list[str], cwd: Path) -> None:
    """One build or install step; its output is the failure message."""
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=outside_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{argv[:6]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from a copy of the sources, installed with the runtime lock in a fresh venv."""
    base = tmp_path_factory.mktemp("wheel")
    assert not base.resolve().is_relative_to(ROOT)
    source, dist, venv, work = base / "source", base / "dist", base / "venv", base / "work"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=junk)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    work.mkdir()
    step(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)],
        base,
    )
    (wheel,) = dist.glob("*.whl")
    step([sys.executable, "-m", "venv", str(venv)], base)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    step(
        [*pip, "install", "--quiet", "--require-hashes", "-r", str(ROOT / "requirements" / "runtime.txt")],
        work,
    )
    step([*pip, "install", "--quiet", "--no-deps", str(wheel)], work)
    # Every dependency the wheel declares is one the runtime lock brought.
    step([*pip, "check"], work)
    return Installed(wheel, venv, work)


def test_the_wheel_ships_the_package_its_web_view_and_its_license_and_nothing_of_the_tests(
    installed: Installed,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    web_files = {f"{WEB}/{path.name}" for path in (ROOT / WEB).iterdir() if path.is_file()}
    assert web_files >= {f"{WEB}/index.html", f"{WEB}/app.js", f"{WEB}/app.css"}
    assert web_files <= names
    assert {"bus_tasks/py.typed", "bus_tasks/frontdoors/http/openapi.json"} <= names
    assert {f"{DIST_INFO}/licenses/LICENSE", f"{DIST_INFO}/entry_points.txt"} <= names
    assert not [name for name in names if name.startswith(("tests/", "bench/", "deploy/", "config/"))]


def test_the_wheel_installs_no_top_level_package_but_bus_tasks(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert tops == {"bus_tasks", DIST_INFO}


def test_the_installed_metadata_names_the_license_the_authors_and_the_python_it_needs(
    installed: Installed,
) -> None:
    code = (
        "import importlib.metadata as m, json; d = m.metadata('bus_tasks'); "
        "print(json.dumps({k: d.get_all(k) for k in ('Name', 'Version', 'License-Expression', "
        "'License-File', 'Author', 'Requires-Python', 'Keywords')}))"
    )
    assert json.loads(installed.python(code)) == {
        "Name": ["bus_tasks"],
        "Version": [VERSION],
        "License-Expression": ["Apache-2.0"],
        "License-File": ["LICENSE"],
        "Author": ["bus_tasks developers"],
        "Requires-Python": [">=3.11"],
        "Keywords": ["task status,message bus,rabbitmq,amqp,redis,kombu,json-rpc,stomp,vdsm"],
    }
    classifiers = json.loads(
        installed.python(
            "import importlib.metadata as m, json; "
            "print(json.dumps(m.metadata('bus_tasks').get_all('Classifier')))"
        )
    )
    assert {"Programming Language :: Python :: 3.11", "Typing :: Typed"} <= set(classifiers)


def test_the_package_and_the_console_scripts_code_are_imported_from_the_venv_not_the_checkout(
    installed: Installed,
) -> None:
    code = (
        "import importlib, importlib.metadata as m, bus_tasks; print(bus_tasks.__file__); "
        "script = m.entry_points(group='console_scripts')['bus-tasks']; "
        "print(importlib.import_module(script.module).__file__)"
    )
    paths = [Path(line) for line in installed.python(code).splitlines()]
    assert len(paths) == 2
    for path in paths:
        assert path.is_relative_to(installed.venv / "lib"), path
        assert not path.is_relative_to(ROOT), path


def test_bus_tasks_version_names_the_installed_version(installed: Installed) -> None:
    done = installed.run("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"bus-tasks {VERSION}\n", "")


def test_bus_tasks_demo_from_the_wheel_prints_what_the_checkout_prints(installed: Installed) -> None:
    done = installed.run("demo")
    assert (done.returncode, done.stderr) == (0, "")
    ours = run_cli("demo", cwd=installed.work, timeout_s=120)
    assert (ours.returncode, ours.stderr) == (0, "")

    def sections(stdout: str) -> list[tuple[str, str]]:
        """(title, body) of each ``== title`` section; a task id in a title reads ``<id>``."""
        chunks = [chunk.partition("\n") for chunk in stdout.split("\n== ")[1:]]
        return [
            (re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "<id>", title), body)
            for title, _, body in chunks
        ]

    wheel_sections = sections(done.stdout)
    assert [title for title, _ in wheel_sections] == [title for title, _ in sections(ours.stdout)]
    rows, count = parse_table(wheel_sections[0][1].strip("\n"))
    assert count == len(rows) == 10
    assert {row["SUBSYSTEM"] for row in rows} == {"vdsm", "gluster"}


def fetch(base: str, path: str) -> tuple[int, str, bytes]:
    """Status, Content-Type and body of ``GET path``."""
    try:
        with _NO_PROXY.open(base + path, timeout=20) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture
def served(installed: Installed) -> Iterator[str]:
    """``bus-tasks serve --http 127.0.0.1:0`` of the installed wheel, on ``memory://``; its base URL."""
    argv = [str(installed.bus_tasks), "serve", "--broker", "memory://"]
    argv += ["--data-dir", str(installed.work / "data"), "--http", "127.0.0.1:0"]
    process = Process(argv, env={**outside_env(), "BUS_TASKS_LOG_LEVEL": "INFO"}, cwd=installed.work)
    try:
        base = process.wait_for_http(timeout_s=READY_TIMEOUT_S)
        wait_until(lambda: fetch(base, "/readyz")[0] == 200, timeout_s=READY_TIMEOUT_S, what="readyz")
        yield base
    finally:
        process.kill()


def test_serve_http_from_the_wheel_serves_the_web_view_and_every_asset_it_loads(
    installed: Installed, served: str
) -> None:
    status, content_type, index = fetch(served, "/")
    assert (status, content_type.split(";")[0]) == (200, "text/html")
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = {
            Path(name).name: wheel.read(name) for name in wheel.namelist() if name.startswith(WEB + "/")
        }
    assert index == shipped["index.html"]
    seen, queue = set(), ["index.html"]
    while queue:
        name = queue.pop()
        text = shipped[name].decode()
        for match in _ASSET_REF.finditer(text):
            asset = match.group(1) or match.group(2)
            if asset not in seen:
                seen.add(asset)
                queue.append(asset)
    assert {"app.js", "model.js", "app.css", "favicon.svg"} <= seen
    for asset in sorted(seen):
        status, content_type, body = fetch(served, "/" + asset)
        assert (asset, status, body) == (asset, 200, shipped[asset])
    # The API answers through the aggregator the same process serves: no task on a new memory:// bus.
    status, content_type, body = fetch(served, "/api/tasks")
    assert (status, content_type.split(";")[0], json.loads(body)) == (200, "application/json", {})
    status, content_type, body = fetch(served, "/openapi.json")
    assert (status, json.loads(body)["openapi"][:2]) == (200, "3.")
