"""Settings: defaults < config file < BUS_TASKS_* env < arguments; misspellings are errors; no secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from support.environment import without_settings

from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.config import (
    DEFAULT_CONFIG_FILE,
    Settings,
    check_broker_url,
    config_file,
    load_settings,
    redact_url,
)
from bus_tasks.errors import ConfigError
from bus_tasks.workers.wiring import aggregator_policy

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "config" / "bus_tasks.toml"

DEFAULTS = {
    "broker_url": SecretStr("amqp://guest:guest@127.0.0.1:5672//"),
    "redis_key_prefix": "",
    "heartbeat_s": 30.0,
    "connect_timeout_s": 5.0,
    "rpc_timeout_s": 10.0,
    "prefetch_count": 256,
    "max_event_bytes": 1048576,
    "max_request_bytes": 1048576,
    "max_reply_bytes": 15728640,
    "max_batch_calls": 100,
    "data_dir": Path("data"),
    "store": "sqlite",
    "store_redis_url": None,
    "store_key_prefix": "bus_tasks:view:",
    "done_ttl_s": 604800.0,
    "tombstone_ttl_s": 2592000.0,
    "event_log": "stream",
    "event_log_max_age": "7D",
    "queue_type": "classic",
    "aggregator_name": "",
    "test_subsystem": "test",
    "http_listen": "",
    "http_allow_remote": False,
    "http_control": False,
    "http_token": None,
    "authorization": "off",
    "readers": [],
    "operators": [],
    "admins": [],
    "front_doors": [],
    "http_tokens": {},
    "stomp_connect_timeout_s": 10.0,
    "stomp_max_connections": 1000,
    "stomp_max_pending": 100,
    "stomp_max_outbuf_bytes": 16777216,
    "stomp_metrics": "",
    "http_max_watchers": 1000,
    "http_max_body_bytes": 65536,
    "http_idle_timeout_s": 30.0,
    "log_level": "INFO",
    "identity": "off",
    "publishers": {},
    "aggregators": [],
    "broker_ssl_ca": None,
    "broker_ssl_cert": None,
    "broker_ssl_key": None,
    "broker_login_method": None,
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_settings(monkeypatch, tmp_path)


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(text)
    monkeypatch.setenv("BUS_TASKS_CONFIG", str(path))
    return path


def test_the_defaults_of_the_settings_fields_are_the_defaults() -> None:
    defaults = {name: field.get_default() for name, field in Settings.model_fields.items()}
    assert defaults == DEFAULTS


def test_settings_without_env_are_the_defaults() -> None:
    assert Settings().model_dump() == DEFAULTS


def test_the_shipped_config_file_states_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_CONFIG", str(SHIPPED_CONFIG))
    assert Settings().model_dump() == DEFAULTS


def test_the_shipped_config_file_is_found_from_another_working_directory(tmp_path: Path) -> None:
    assert Path.cwd() == tmp_path
    assert DEFAULT_CONFIG_FILE == SHIPPED_CONFIG
    assert config_file() == SHIPPED_CONFIG


def test_a_config_directory_in_the_working_directory_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bus_tasks.toml").write_text('log_level = "DEBUG"\n')
    assert config_file() == SHIPPED_CONFIG
    assert Settings().model_dump() == DEFAULTS


def test_the_aggregator_policy_of_the_default_settings_is_the_default_policy() -> None:
    assert aggregator_policy(Settings()) == AggregatorPolicy()


def test_env_broker_url_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_BROKER_URL", "redis://127.0.0.1:6379/0")
    assert Settings().model_dump() == {**DEFAULTS, "broker_url": SecretStr("redis://127.0.0.1:6379/0")}
    assert Settings().broker == "redis://127.0.0.1:6379/0"


def test_env_values_are_parsed_to_their_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_PREFETCH_COUNT", "16")
    monkeypatch.setenv("BUS_TASKS_DATA_DIR", "/var/lib/bus_tasks")
    assert Settings().model_dump() == {
        **DEFAULTS,
        "prefetch_count": 16,
        "data_dir": Path("/var/lib/bus_tasks"),
    }


def test_a_config_file_named_by_bus_tasks_config_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(
        tmp_path,
        'broker_url = "amqp://svc:pw@rabbit:5672/prod"\nheartbeat_s = 10\ndone_ttl_s = 60.0\n',
        monkeypatch,
    )
    assert config_file() == path
    assert Settings().model_dump() == {
        **DEFAULTS,
        "broker_url": SecretStr("amqp://svc:pw@rabbit:5672/prod"),
        "heartbeat_s": 10.0,
        "done_ttl_s": 60.0,
    }


def test_env_overrides_the_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(tmp_path, 'broker_url = "amqp://file/"\nheartbeat_s = 10\n', monkeypatch)
    monkeypatch.setenv("BUS_TASKS_BROKER_URL", "amqp://env/")
    assert Settings().model_dump() == {
        **DEFAULTS,
        "broker_url": SecretStr("amqp://env/"),
        "heartbeat_s": 10.0,
    }


def test_arguments_override_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(tmp_path, "heartbeat_s = 10\n", monkeypatch)
    monkeypatch.setenv("BUS_TASKS_HEARTBEAT_S", "20")
    assert Settings(heartbeat_s=5).heartbeat_s == 5.0


def test_a_misspelled_key_in_the_config_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_config(tmp_path, 'brokr_url = "amqp://x/"\n', monkeypatch)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(("brokr_url",), "extra_forbidden")]


def test_a_bus_tasks_config_naming_a_missing_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BUS_TASKS_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(FileNotFoundError, match=r"absent\.toml"):
        Settings()


def test_load_settings_applies_the_overrides_that_are_given() -> None:
    settings = load_settings(broker_url="memory://", log_level=None)
    assert settings.model_dump() == {**DEFAULTS, "broker_url": SecretStr("memory://")}


def test_load_settings_names_the_config_file_of_a_bad_value_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(tmp_path, 'broker_url = "foo://user:s3cr3t-pw@host/"\n', monkeypatch)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        "broker_url: broker URL scheme 'foo' is not supported: use one of amqp://, amqps://, pyamqp://, "
        f"redis://, rediss://, memory:// (from config file {path})"
    )


def test_load_settings_refuses_a_config_file_that_does_not_parse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(tmp_path, "heartbeat_s = \n", monkeypatch)
    with pytest.raises(ConfigError, match=f"^{re.escape(f'config file {path}: ')}"):
        load_settings()


def test_load_settings_refuses_a_bus_tasks_config_naming_a_missing_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "absent.toml"
    monkeypatch.setenv("BUS_TASKS_CONFIG", str(missing))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"BUS_TASKS_CONFIG names {str(missing)!r}, which is not a file"


@pytest.mark.parametrize(
    ("name", "value"),
    [("BUS_TASKS_HEARTBEAT_S", "-1"), ("BUS_TASKS_PREFETCH_COUNT", "0"), ("BUS_TASKS_RPC_TIMEOUT_S", "soon")],
)
def test_an_out_of_range_value_is_an_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.heartbeat_s = 1.0  # type: ignore[misc]


def test_with_overrides_replaces_the_given_values_and_keeps_the_others() -> None:
    changed = Settings().with_overrides(broker_url="memory://", heartbeat_s=None, prefetch_count=8)
    assert changed.model_dump() == {**DEFAULTS, "broker_url": SecretStr("memory://"), "prefetch_count": 8}


def test_with_overrides_validates_again() -> None:
    with pytest.raises(ValidationError):
        Settings().with_overrides(prefetch_count=0)


# -- secrets -----------------------------------------------------------------------------


def test_the_broker_password_never_appears_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_BROKER_URL", "amqp://svc:s3cr3t-pw@rabbit:5672/prod")
    settings = Settings()
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in str(settings)
    assert "s3cr3t-pw" not in repr(settings.with_overrides(heartbeat_s=1.0))
    assert settings.broker == "amqp://svc:s3cr3t-pw@rabbit:5672/prod"


def test_the_store_redis_password_never_appears_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_STORE", "redis")
    monkeypatch.setenv("BUS_TASKS_STORE_REDIS_URL", "redis://:s3cr3t-pw@cache:6379/0")
    settings = Settings()
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in str(settings)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("amqp://svc:s3cr3t-pw@rabbit:5672/prod", "amqp://svc:***@rabbit:5672/prod"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("redis://:s3cr3t-pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://svc:s3cr3t-pw@cache/0?ssl=true", "redis://svc:***@cache/0?ssl=true"),
    ],
)
def test_redact_url_replaces_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_redact_url_keeps_the_brackets_of_an_ipv6_host() -> None:
    # Without them the redacted URL no longer parses: "::1:5672" is not a host and a port.
    assert redact_url("amqp://svc:s3cr3t-pw@[::1]:5672/prod") == "amqp://svc:***@[::1]:5672/prod"


def test_redact_url_replaces_the_password_of_every_node_of_a_cluster() -> None:
    url = "amqp://svc:pw-one@r1:5672/prod;amqp://svc:pw-two@r2:5672/prod;amqp://svc:pw-three@r3/prod"
    assert redact_url(url) == (
        "amqp://svc:***@r1:5672/prod;amqp://svc:***@r2:5672/prod;amqp://svc:***@r3/prod"
    )


def test_a_cluster_url_whose_nodes_mix_schemes_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="different schemes") as caught:
        check_broker_url("amqp://svc:pw-one@r1/;redis://:pw-two@r2/0")
    assert "pw-" not in str(caught.value)


def test_a_cluster_url_with_a_malformed_second_node_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="malformed") as caught:
        check_broker_url("amqp://svc:pw-one@r1/;amqp://svc:pw-two@r2:notaport/")
    assert "pw-" not in str(caught.value)


@pytest.mark.parametrize("url", ["memory://", "redis://cache:6379/0", "amqp://svc@rabbit/"])
def test_redact_url_leaves_a_url_without_password_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_a_misspelled_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_BROKR_URL", "amqp://x")
    with pytest.raises(ConfigError, match="BUS_TASKS_BROKR_URL"):
        Settings()
