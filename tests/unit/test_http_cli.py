"""``bus-tasks serve --http``: loopback unless told otherwise, control only with a token, bad
addresses refused before anything is contacted; the token is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from support.cli_helpers import cli_env, run_cli
from support.environment import without_settings

from bus_tasks.config import Settings, load_settings
from bus_tasks.errors import ConfigError
from bus_tasks.workers.serve import check_http, is_loopback

TOKEN = "a-long-enough-token-0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_settings(monkeypatch, tmp_path)


def serve(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    done = run_cli(
        "serve", "--broker", "memory://", "--data-dir", str(tmp_path / "data"), *args,
        cwd=tmp_path, env=cli_env(**env), timeout_s=30,
    )  # fmt: skip
    return done.returncode, done.stderr


@pytest.mark.parametrize("address", ["0.0.0.0:8080", ":8080", "192.0.2.7:8080", "example.com:80", "[::]:0"])
def test_serve_refuses_an_http_address_that_is_not_loopback_unless_told(tmp_path: Path, address: str) -> None:
    status, stderr = serve(tmp_path, "--http", address)
    assert status == 2
    assert "is not a loopback address" in stderr
    assert "--http-allow-remote" in stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_serve_refuses_http_control_without_a_token_or_with_a_short_one(tmp_path: Path) -> None:
    for env in ({}, {"BUS_TASKS_HTTP_TOKEN": "short"}):
        status, stderr = serve(tmp_path, "--http", "127.0.0.1:0", "--http-control", **env)
        assert status == 2  # a configuration error, as the README says
        assert "bus-tasks serve: bad configuration: " in stderr
        assert "needs http_token, at least 16 characters" in stderr
        assert "short" not in stderr


@pytest.mark.parametrize(
    ("address", "message"),
    [("nope", "'nope' is not HOST:PORT"), ("127.0.0.1:http", "'127.0.0.1:http' is not HOST:PORT")],
)
def test_a_malformed_http_address_is_a_usage_error(tmp_path: Path, address: str, message: str) -> None:
    status, stderr = serve(tmp_path, "--http", address)
    assert status == 2
    assert stderr.splitlines()[-1] == f"bus-tasks serve: error: argument --http: {message}"


def test_a_port_past_65535_is_refused(tmp_path: Path) -> None:
    status, stderr = serve(tmp_path, "--http", "127.0.0.1:70000")
    assert (status, "the port is more than 65535" in stderr) == (2, True)


def test_a_malformed_http_listen_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_HTTP_LISTEN", "not an address")
    with pytest.raises(ConfigError, match=r"^http_listen: "):
        load_settings()


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),  # off
        Settings(http_listen="127.0.0.1:0"),
        Settings(http_listen="[::1]:8080"),
        Settings(http_listen="localhost:8080"),
        Settings(http_listen="0.0.0.0:8080", http_allow_remote=True),
        Settings(http_listen="127.0.0.1:0", http_control=True, http_token=SecretStr(TOKEN)),
        # with authorization on, control is the roles' (http_tokens name the callers)
        Settings(http_listen="127.0.0.1:0", http_control=True, authorization="on", operators=["otto"]),
    ],
)
def test_loopback_or_an_explicit_remote_and_control_with_a_token_are_accepted(settings: Settings) -> None:
    check_http(settings)


def test_the_token_is_never_in_the_settings_repr_or_a_refusal() -> None:
    settings = Settings(http_listen="0.0.0.0:1", http_control=True, http_token=SecretStr(TOKEN))
    assert TOKEN not in repr(settings)
    with pytest.raises(ConfigError) as refused:
        check_http(settings)
    assert TOKEN not in refused.value.message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("10.0.0.1", False), ("myhost", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
