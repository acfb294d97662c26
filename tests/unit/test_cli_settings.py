"""Client commands read the settings without the store's: a bad store setting stops only ``serve``."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli_helpers import cli_env, run_cli
from support.environment import without_settings

from bus_tasks.config import DEFAULT_DATA_DIR, STORE_SETTINGS, load_settings
from bus_tasks.errors import ConfigError

# Store settings no aggregator could use: an unknown store, a Redis store without its URL, a
# data directory that is not a path.
BAD_STORES = {
    "unknown-store": 'store = "mongo"\n',
    "redis-without-url": 'store = "redis"\n',
    "data-dir-not-a-path": "data_dir = 5\n",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_settings(monkeypatch, tmp_path)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bus_tasks.toml"
    path.write_text(f'broker_url = "memory://"\nrpc_timeout_s = 3.0\n{text}')
    return path


@pytest.mark.parametrize("store", list(BAD_STORES.values()), ids=list(BAD_STORES))
def test_settings_without_the_store_ignore_a_bad_store_setting_and_keep_the_others(
    store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BUS_TASKS_CONFIG", str(_config(tmp_path, store)))
    settings = load_settings(with_store=False)
    assert (settings.broker, settings.rpc_timeout_s) == ("memory://", 3.0)
    assert (settings.store, settings.store_redis_url, settings.data_dir) == ("none", None, DEFAULT_DATA_DIR)


@pytest.mark.parametrize("store", list(BAD_STORES.values()), ids=list(BAD_STORES))
def test_settings_with_the_store_still_refuse_a_bad_store_setting(
    store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BUS_TASKS_CONFIG", str(_config(tmp_path, store)))
    with pytest.raises(ConfigError):
        load_settings()


def test_settings_without_the_store_still_refuse_a_bad_setting_of_the_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BUS_TASKS_CONFIG", str(_config(tmp_path, 'store = "mongo"\nheartbeat_s = "soon"\n')))
    with pytest.raises(ConfigError, match=r"^heartbeat_s: "):
        load_settings(with_store=False)


def test_the_store_settings_are_those_of_the_store_and_its_directory() -> None:
    assert set(STORE_SETTINGS) == {"data_dir", "store", "store_redis_url", "store_key_prefix"}


def test_serve_refuses_a_bad_store_setting_that_a_client_command_does_not_read(tmp_path: Path) -> None:
    env = cli_env(BUS_TASKS_CONFIG=str(_config(tmp_path, 'store = "redis"\n')))
    served = run_cli("serve", cwd=tmp_path, env=env)
    assert (served.returncode, served.stdout) == (2, "")
    assert served.stderr.startswith("bus-tasks: bad configuration: ")
    assert 'store = "redis" needs store_redis_url' in served.stderr
    # The same configuration lets a client command go on to the broker (refused: nothing listens
    # on port 1), where it fails for what it is, not for the store.
    refused = run_cli("tasks", "--broker", "amqp://guest:guest@127.0.0.1:1//", cwd=tmp_path, env=env)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "bad configuration" not in refused.stderr
    assert "127.0.0.1:1" in refused.stderr.splitlines()[-1]
