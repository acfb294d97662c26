"""docker-compose.yml as an operator would want it: pinned images, published ports on loopback,
no guest, settings and keys from secret files, a health check per replica that asks that replica,
STOMP over TLS, and every process its own least-privilege broker user from ``broker-setup``
(the secrets made by deploy/compose/make_secrets.py, read here as the containers read them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from test_compose import (
    BUS_TASKS_SERVICES,
    COMPOSE,
    ROOT,
    SERVICES,
    _environment,
    _healthcheck_argv,
    _parse,
)

from bus_tasks.config import CONFIG_ENV, Settings
from bus_tasks.workers.simulate import SUBSYSTEMS

MAKE_SECRETS = ROOT / "deploy" / "compose" / "make_secrets.py"
SECRETS_ENV = "${BUS_TASKS_SECRETS_DIR:-./deploy/compose/secrets}/"
EXACT_TAG = re.compile(
    r"[a-z0-9./-]+:\d+\.\d+\.\d+[-.a-z0-9]*(@sha256:[0-9a-f]{64})?|[a-z0-9./-]+@sha256:[0-9a-f]{64}"
)


def _secrets_of(service: dict[str, Any]) -> dict[str, str]:
    """Mounted path -> the top-level secret it is."""
    mounted = {}
    for entry in service.get("secrets", []):
        source, target = (entry, entry) if isinstance(entry, str) else (entry["source"], entry.get("target"))
        target = target or source
        mounted[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    return mounted


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compose") / "secrets"
    done = subprocess.run(
        [sys.executable, str(MAKE_SECRETS), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize(
    "service", sorted(s for s in SERVICES if "image" in SERVICES[s] and "build" not in SERVICES[s])
)
def test_every_image_pulled_is_pinned_to_an_exact_version(service: str) -> None:
    assert EXACT_TAG.fullmatch(SERVICES[service]["image"]), SERVICES[service]["image"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_published_ports_listen_on_the_host_s_loopback(service: str) -> None:
    for port in SERVICES[service].get("ports", []):
        host_ip = port.split(":")[0] if isinstance(port, str) else port.get("host_ip")
        assert host_ip == "127.0.0.1", f"{service} publishes {port} on every interface"


def test_redis_is_not_published_and_asks_a_password_from_a_secret() -> None:
    redis = SERVICES["redis"]
    assert "ports" not in redis
    assert redis["command"] == ["redis-server", "/run/secrets/redis.conf"]
    assert _secrets_of(redis) == {"/run/secrets/redis.conf": "redis.conf"}
    assert "/run/secrets/redis.conf" in redis["healthcheck"]["test"][1]  # the check logs in too


def test_nobody_is_guest() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "guest" not in text.lower()


def test_every_secret_comes_from_a_file_of_the_secrets_directory() -> None:
    declared = COMPOSE["secrets"]
    for name, secret in declared.items():
        assert secret == {"file": SECRETS_ENV + name}
    used = {source for service in SERVICES.values() for source in _secrets_of(service).values()}
    assert used == set(declared)


@pytest.mark.parametrize("service", sorted(BUS_TASKS_SERVICES))
def test_each_bus_tasks_process_reads_its_settings_from_a_secret_of_its_own(service: str) -> None:
    mounted = _secrets_of(SERVICES[service])
    assert _environment(SERVICES[service])[CONFIG_ENV] == "/run/secrets/bus_tasks.toml"
    assert "/run/secrets/bus_tasks.toml" in mounted
    own = mounted["/run/secrets/bus_tasks.toml"]
    sharing = [
        s for s in BUS_TASKS_SERVICES if _secrets_of(SERVICES[s]).get("/run/secrets/bus_tasks.toml") == own
    ]
    assert sharing == [service]


@pytest.mark.parametrize("service", ["aggregator", "aggregator-2"])
def test_each_replica_s_health_check_asks_that_replica_by_name(service: str) -> None:
    argv = _healthcheck_argv(SERVICES[service])
    assert argv is not None
    args = _parse(argv[1:])
    assert args.command == "health"
    assert args.aggregator == _environment(SERVICES[service])["BUS_TASKS_AGGREGATOR_NAME"]


def test_stomp_serves_tls_with_a_certificate_and_key_from_secrets() -> None:
    args = _parse(BUS_TASKS_SERVICES["stomp"])
    mounted = _secrets_of(SERVICES["stomp"])
    assert (mounted.get(args.tls_cert), mounted.get(args.tls_key)) == ("stomp.pem", "stomp.key")


def test_rabbitmq_loads_the_definitions_secret_at_boot(made: Path) -> None:
    rabbitmq = SERVICES["rabbitmq"]
    (config,) = [c for c in rabbitmq["configs"] if c["source"] == "rabbitmq-conf"]  # and the cluster's
    conf = (ROOT / COMPOSE["configs"][config["source"]]["file"]).read_text()
    settings = dict(line.split(" = ", 1) for line in conf.splitlines() if line and not line.startswith("#"))
    assert _secrets_of(rabbitmq) == {settings["load_definitions"]: "rabbitmq-definitions.json"}
    assert settings["loopback_users.guest"] == "true"  # were a guest ever made, not from outside


def _settings_of(made: Path, service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings ``service`` runs with: its secret file, then its environment."""
    secret = _secrets_of(SERVICES[service])["/run/secrets/bus_tasks.toml"]
    for key in [k for k in os.environ if k.startswith("BUS_TASKS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv(CONFIG_ENV, str(made / secret))
    for key, value in _environment(SERVICES[service]).items():
        if key != CONFIG_ENV:
            monkeypatch.setenv(key, value)
    return Settings()


def _role_of(document: dict[str, Any], user: str) -> dict[str, str]:
    (permission,) = [p for p in document["permissions"] if p["user"] == user]
    found: dict[str, str] = permission
    return found


@pytest.mark.parametrize("service", sorted(BUS_TASKS_SERVICES))
def test_each_process_logs_in_as_its_own_least_privilege_user_with_identity_checked(
    made: Path, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_of(made, service, monkeypatch)
    nodes = [urlsplit(node) for node in settings.broker.split(";")]  # one URL per node of the cluster
    url = nodes[0]
    user = unquote(url.username or "")
    document = json.loads((made / "rabbitmq-definitions.json").read_text())
    users = {u["name"]: u for u in document["users"]}
    assert [(n.hostname, n.port, n.path) for n in nodes] == [
        (host, 5672, "/bus") for host in ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
    ]
    assert {(n.username, n.password) for n in nodes} == {(url.username, url.password)}
    assert settings.queue_type == "quorum"
    assert settings.identity == "broker"
    assert settings.aggregators == ["aggregator-1", "aggregator-2"]
    assert users[user]["tags"] == []  # no management, no administrator
    assert users[user]["password_hash"]
    permission = _role_of(document, user)
    assert ".*" not in (permission["configure"], permission["write"], permission["read"])
    args = _parse(BUS_TASKS_SERVICES[service])
    if args.command == "serve":
        assert user == settings.aggregator_name  # the replica's identity is its name
        assert "bus_tasks\\.rpc" in permission["read"]
    elif args.command == "simulate":
        assert user == (args.subsystem or SUBSYSTEMS[args.kind])  # it publishes as itself
    else:
        assert (args.command, user) == ("stomp", "stomp")


def test_the_definitions_have_no_guest_and_one_administrator_for_the_management_ui(made: Path) -> None:
    document = json.loads((made / "rabbitmq-definitions.json").read_text())
    assert {u["name"]: u["tags"] for u in document["users"]} == {
        "aggregator-1": [],
        "aggregator-2": [],
        "vdsm": [],
        "gluster": [],
        "stomp": [],
        "ops": [],
        "admin": ["administrator"],
    }
    assert {v["name"] for v in document["vhosts"]} == {"bus"}


def test_the_made_secrets_are_kept_from_the_host_s_other_users(made: Path) -> None:
    assert made.stat().st_mode & 0o777 == 0o700
    assert (made / "passwords").stat().st_mode & 0o777 == 0o600
    declared = set(COMPOSE["secrets"])
    assert declared <= {path.name for path in made.iterdir()}


def test_the_cluster_s_erlang_cookie_is_random_and_kept_from_other_users(made: Path, tmp_path: Path) -> None:
    def cookie_of(out: Path) -> str:
        key, _, value = (out / "rabbitmq.env").read_text().strip().partition("=")
        assert key == "RABBITMQ_ERLANG_COOKIE"
        return value

    cookie = cookie_of(made)
    assert re.fullmatch(r"[0-9a-f]{64}", cookie)
    assert (made / "rabbitmq.env").stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [sys.executable, str(MAKE_SECRETS), "--out", str(tmp_path / "again")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert cookie_of(tmp_path / "again") != cookie  # each deployment its own


def test_make_secrets_leaves_an_existing_directory_alone(made: Path) -> None:
    before = (made / "passwords").read_text()
    done = subprocess.run(
        [sys.executable, str(MAKE_SECRETS), "--out", str(made)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, (made / "passwords").read_text()) == (1, before)
