"""deploy/systemd/: each unit passes ``systemd-analyze verify`` with no complaint, starts the
subcommand it names with arguments that parse, tells systemd when it is ready, keeps its data
under StateDirectory and is hardened."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support.tools import require_tool

from bus_tasks.workers.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED_BIN = "/usr/local/bin/bus-tasks"
NAMES = {
    "bus-tasks-serve.service": "serve",
    "bus-tasks-stomp.service": "stomp",
    "bus-tasks-gluster.service": "gluster",
}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


def _entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order (keys may repeat)."""
    section, entries = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def _service(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for section, key, value in _entries(path):
        if section == "Service":
            found.setdefault(key, []).append(value)
    return found


# Units ours require that other packages install (any other unknown unit is verify's finding).
PACKAGED_ELSEWHERE = {"glusterd.service": "glusterfs-server"}
SYSTEM_UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)


def _required_units(text: str) -> list[str]:
    """The units a unit file's ``Requires=`` lines name (targets and services alike)."""
    return [name for line in text.splitlines() if line.startswith("Requires=") for name in line[9:].split()]


def test_there_is_a_unit_for_serve_stomp_and_gluster() -> None:
    assert {path.name for path in UNITS.glob("*.service")} == set(NAMES)


@pytest.mark.parametrize("unit", sorted(NAMES))
def test_systemd_analyze_verify_finds_nothing_to_say_about_the_unit(unit: str, tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    # verify wants ExecStart's binary to exist: this venv's bus-tasks stands in for the installed one.
    text = (UNITS / unit).read_text()
    assert INSTALLED_BIN in text
    (tmp_path / unit).write_text(text.replace(INSTALLED_BIN, str(Path(sys.executable).parent / "bus-tasks")))
    # A unit it requires that this machine lacks (glusterd.service comes with glusterfs-server,
    # which .ci/run installs, a developer's machine may not): a stand-in on the search path.
    for required in _required_units(text):
        if required in PACKAGED_ELSEWHERE and not any(
            (Path(d) / required).exists() for d in SYSTEM_UNIT_DIRS
        ):
            (tmp_path / required).write_text("[Service]\nExecStart=/bin/true\n")
    done = subprocess.run(
        [str(analyze), "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},  # the trailing colon: and the usual path
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize(("unit", "command"), sorted(NAMES.items()))
def test_each_unit_runs_its_subcommand_with_arguments_that_parse(unit: str, command: str) -> None:
    (exec_start,) = _service(UNITS / unit)["ExecStart"]
    argv = shlex.split(exec_start.replace("${CREDENTIALS_DIRECTORY}", "/run/credentials/x"))
    assert argv[0] == INSTALLED_BIN
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{exec_start} does not parse:\n{stderr.getvalue()}")
    assert args.command == command


@pytest.mark.parametrize("unit", sorted(NAMES))
def test_each_unit_is_type_notify_with_its_settings_as_a_credential_and_a_state_directory(unit: str) -> None:
    service = _service(UNITS / unit)
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert any(value.startswith("bus_tasks.toml:/etc/bus_tasks/") for value in service["LoadCredential"])
    assert "BUS_TASKS_CONFIG=%d/bus_tasks.toml" in service["Environment"]
    (state,) = service["StateDirectory"]
    assert service["WorkingDirectory"] == [f"%S/{state}"]
    assert service["StateDirectoryMode"] == ["0700"]
    assert "BUS_TASKS_BROKER_URL" not in " ".join(service.get("Environment", []))  # secrets stay in files


def test_the_aggregator_keeps_its_view_under_its_state_directory() -> None:
    service = _service(UNITS / "bus-tasks-serve.service")
    assert service["StateDirectory"] == ["bus_tasks"]
    assert "BUS_TASKS_DATA_DIR=%S/bus_tasks" in service["Environment"]


@pytest.mark.parametrize("unit", sorted(NAMES))
def test_each_unit_is_hardened(unit: str) -> None:
    service = _service(UNITS / unit)
    assert {key: service.get(key, [None])[-1] for key in HARDENING} == HARDENING
    assert service["SystemCallFilter"][0] == "@system-service"
    assert service["CapabilityBoundingSet"] != ["~"]  # some bound, not everything


@pytest.mark.parametrize("unit", ["bus-tasks-serve.service", "bus-tasks-stomp.service"])
def test_serve_and_stomp_run_as_a_dynamic_user_without_capabilities(unit: str) -> None:
    service = _service(UNITS / unit)
    assert service["DynamicUser"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""]


def test_stomp_serves_tls_with_a_certificate_handed_over_as_a_credential() -> None:
    service = _service(UNITS / "bus-tasks-stomp.service")
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[argv.index("--tls-cert") + 1] == "${CREDENTIALS_DIRECTORY}/stomp.pem"
    assert argv[argv.index("--tls-key") + 1] == "${CREDENTIALS_DIRECTORY}/stomp.key"
    assert {"stomp.pem:/etc/bus_tasks/stomp.pem", "stomp.key:/etc/bus_tasks/stomp.key"} <= set(
        service["LoadCredential"]
    )
