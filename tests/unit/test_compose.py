"""docker-compose.yml and the Dockerfile agree with the code: subcommands, options, settings, wiring.

Docker cannot run here, so the files are parsed; a renamed subcommand, option or setting fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from bus_tasks.config import CONFIG_ENV, Settings
from bus_tasks.workers.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SETTING_ENV = {f"BUS_TASKS_{name.upper()}": name for name in Settings.model_fields}


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _argv(value: str | list[str]) -> list[str]:
    """A compose command/entrypoint (exec list or shell string) as an argument list."""
    return list(value) if isinstance(value, list) else shlex.split(value)


def _image_entrypoint() -> list[str]:
    entrypoints = [rest for keyword, rest in _dockerfile() if keyword == "ENTRYPOINT"]
    assert entrypoints, "the Dockerfile has no ENTRYPOINT"
    return list(json.loads(entrypoints[-1]))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["KEY=value", ...] form
        return dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _bus_tasks_args(service: dict[str, Any]) -> list[str] | None:
    """The arguments given to ``bus-tasks`` by a service, or None if it does not run it."""
    if "entrypoint" in service:
        entrypoint = _argv(service["entrypoint"])
    elif "build" in service:
        entrypoint = _image_entrypoint()
    else:
        return None
    if not entrypoint or Path(entrypoint[0]).name != "bus-tasks":
        return None
    return entrypoint[1:] + _argv(service.get("command", []))


BUS_TASKS_SERVICES = {name: args for name, s in SERVICES.items() if (args := _bus_tasks_args(s)) is not None}


def _parse(args: list[str]) -> Any:
    """``build_parser().parse_args(args)``, with argparse's complaint as the failure message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"bus-tasks {shlex.join(args)} does not parse:\n{stderr.getvalue()}")


def test_compose_has_the_services_of_the_system() -> None:
    rabbits = {"rabbitmq", "rabbitmq-2", "rabbitmq-3"}
    assert set(SERVICES) == {*rabbits, "redis", "aggregator", "aggregator-2", "storage", "gluster", "stomp"}
    assert len({SERVICES[name]["image"] for name in rabbits}) == 1  # one version in a cluster
    assert SERVICES["rabbitmq"]["image"].startswith("rabbitmq:3.")
    assert SERVICES["redis"]["image"].startswith("redis:7.")
    assert {name: args[0] for name, args in BUS_TASKS_SERVICES.items()} == {
        "aggregator": "serve",
        "aggregator-2": "serve",
        "storage": "simulate",
        "gluster": "simulate",
        "stomp": "stomp",
    }


@pytest.mark.parametrize("service", sorted(BUS_TASKS_SERVICES))
def test_each_bus_tasks_service_runs_a_subcommand_whose_arguments_parse(service: str) -> None:
    args = _parse(BUS_TASKS_SERVICES[service])
    assert args.command == BUS_TASKS_SERVICES[service][0]


def test_the_simulators_run_one_storage_and_one_gluster_subsystem() -> None:
    kinds = {name: _parse(BUS_TASKS_SERVICES[name]).kind for name in ("storage", "gluster")}
    assert kinds == {"storage": "storage", "gluster": "gluster"}


def test_the_stomp_front_door_listens_on_all_interfaces_on_vdsm_port_and_publishes_it() -> None:
    args = _parse(BUS_TASKS_SERVICES["stomp"])
    assert args.listen == ("0.0.0.0", 54321)  # the container's: published on the host's loopback
    assert "127.0.0.1:54321:54321" in SERVICES["stomp"]["ports"]


def _healthcheck_argv(service: dict[str, Any]) -> list[str] | None:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, str):
        return shlex.split(test)
    if test and test[0] == "CMD":
        return list(test[1:])
    if test and test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    return None  # none, or NONE


def test_every_healthcheck_that_runs_bus_tasks_parses_too() -> None:
    checked = []
    for name, service in sorted(SERVICES.items()):
        argv = _healthcheck_argv(service)
        if argv and Path(argv[0]).name == "bus-tasks":
            _parse(argv[1:])
            checked.append(name)
    assert checked == ["aggregator", "aggregator-2"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_bus_tasks_env_var_names_a_real_setting_with_a_valid_value(service: str) -> None:
    env = {k: v for k, v in _environment(SERVICES[service]).items() if k.startswith("BUS_TASKS_")}
    unknown = sorted(set(env) - set(SETTING_ENV) - {CONFIG_ENV})
    assert unknown == [], f"{service} sets env vars that are no setting of bus_tasks.config.Settings"
    values = {SETTING_ENV[k]: v for k, v in env.items() if k in SETTING_ENV}
    try:
        Settings.model_validate(values)
    except ValidationError as exc:
        pytest.fail(f"{service}: invalid setting values: {exc}")


def test_bus_tasks_services_read_their_settings_from_a_secret_file_not_the_environment() -> None:
    configs = {name: _environment(SERVICES[name]).get(CONFIG_ENV) for name in BUS_TASKS_SERVICES}
    assert configs == dict.fromkeys(BUS_TASKS_SERVICES, "/run/secrets/bus_tasks.toml")
    assert all("BUS_TASKS_BROKER_URL" not in _environment(SERVICES[name]) for name in BUS_TASKS_SERVICES)


def test_two_aggregators_serve_active_active_with_names_of_their_own() -> None:
    names = {
        s: _environment(SERVICES[s])["BUS_TASKS_AGGREGATOR_NAME"] for s in ("aggregator", "aggregator-2")
    }
    assert names == {"aggregator": "aggregator-1", "aggregator-2": "aggregator-2"}
    assert all("BUS_TASKS_EVENT_LOG" not in _environment(SERVICES[s]) for s in names)  # the stream


@pytest.mark.parametrize("service", ["aggregator", "aggregator-2"])
def test_each_aggregator_keeps_its_view_in_a_named_volume_of_its_own_at_its_data_dir(service: str) -> None:
    aggregator = SERVICES[service]
    data_dir = _environment(aggregator)["BUS_TASKS_DATA_DIR"]
    mounts = {}
    for volume in aggregator.get("volumes", []):
        if isinstance(volume, str):
            source, _, target = volume.partition(":")
            mounts[target.split(":")[0]] = source
        else:
            mounts[volume["target"]] = volume.get("source")
    assert data_dir in mounts, f"nothing is mounted at BUS_TASKS_DATA_DIR={data_dir}"
    assert mounts[data_dir] in (COMPOSE.get("volumes") or {}), "the data dir is not a named volume"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_depends_on_names_existing_services_and_waits_only_for_those_with_a_healthcheck(service: str) -> None:
    depends_on = SERVICES[service].get("depends_on") or {}
    if isinstance(depends_on, list):  # the short form: just started
        depends_on = dict.fromkeys(depends_on)
    conditions = {
        target: (spec or {}).get("condition", "service_started") for target, spec in depends_on.items()
    }
    assert set(conditions) <= set(SERVICES) - {service}
    for target, condition in conditions.items():
        assert condition in ("service_started", "service_healthy", "service_completed_successfully")
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[target], (
                f"{service} waits for {target}, which has no healthcheck"
            )


def test_bus_tasks_services_wait_for_a_healthy_broker_and_the_subsystems_for_the_aggregator() -> None:
    def healthy(service: str) -> set[str]:
        depends_on = SERVICES[service].get("depends_on") or {}
        return {t for t, spec in depends_on.items() if (spec or {}).get("condition") == "service_healthy"}

    # The aggregator binds the event queue: a subsystem publishing earlier would lose its events.
    assert {name: healthy(name) for name in BUS_TASKS_SERVICES} == {
        "aggregator": {"rabbitmq"},
        "aggregator-2": {"rabbitmq"},
        "storage": {"rabbitmq", "aggregator"},
        "gluster": {"rabbitmq", "aggregator"},
        "stomp": {"rabbitmq", "aggregator"},
    }


def test_bus_tasks_services_are_built_from_the_dockerfile() -> None:
    for name in BUS_TASKS_SERVICES:
        build = SERVICES[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == ROOT / "Dockerfile"


def test_dockerfile_installs_the_locked_dependencies_then_the_package_on_python_311_slim() -> None:
    instructions = _dockerfile()
    keyword, image = instructions[0]
    assert keyword == "FROM"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(@sha256:[0-9a-f]{64})?", image), image
    runs = [rest for k, rest in instructions if k == "RUN"]
    locked = [
        i for i, rest in enumerate(runs) if "pip install --require-hashes -r requirements/runtime.txt" in rest
    ]
    package = [i for i, rest in enumerate(runs) if "pip install --no-deps ." in rest]
    assert len(locked) == len(package) == 1, runs
    assert locked[0] < package[0], "the package goes in after the dependencies the lock pins"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert _image_entrypoint() == ["bus-tasks"]


def test_dockerignore_keeps_the_virtualenv_and_git_out_but_lets_the_sources_in() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "a allow-list .dockerignore starts by excluding everything"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {
        source.rstrip("/*")
        for keyword, rest in _dockerfile()
        if keyword == "COPY"
        for source in rest.split()[:-1]
    }
    assert copied <= allowed, "the Dockerfile copies files the build context leaves out"
    assert not {".venv", ".git", "data", "tests"} & allowed


def test_the_three_rabbitmq_nodes_share_a_cookie_and_a_cluster_config_naming_each_of_them() -> None:
    rabbits = [SERVICES[name] for name in ("rabbitmq", "rabbitmq-2", "rabbitmq-3")]
    # One cookie, from the secrets directory (make_secrets.py), never written in the compose file.
    assert {str(node["env_file"]) for node in rabbits} == {
        "${BUS_TASKS_SECRETS_DIR:-./deploy/compose/secrets}/rabbitmq.env"
    }
    assert not any("RABBITMQ_ERLANG_COOKIE" in _environment(node) for node in rabbits)
    assert all(
        {"source": "rabbitmq-cluster-conf", "target": "/etc/rabbitmq/conf.d/91-cluster.conf"}
        in node["configs"]
        for node in rabbits
    )
    config = (ROOT / COMPOSE["configs"]["rabbitmq-cluster-conf"]["file"]).read_text()
    assert all(f"= rabbit@{node['hostname']}" in config for node in rabbits)
