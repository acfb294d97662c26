"""One typed, validated settings object: defaults < config file < ``BUS_TASKS_*`` env < arguments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bus_tasks.errors import ConfigError

ENV_PREFIX = "BUS_TASKS_"
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss", "memory")
CONFIG_ENV = "BUS_TASKS_CONFIG"
DEFAULT_CONFIG_FILE = Path("config/bus_tasks.toml")


def config_file() -> Path | None:
    """The config file in force: ``$BUS_TASKS_CONFIG``, else ``config/bus_tasks.toml`` if present."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(f"{CONFIG_ENV} names {named!r}, which is not a file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


class Settings(BaseSettings):
    """Everything a bus_tasks process can be told; misspelled keys are errors."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    broker_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672//")
    redis_key_prefix: str = ""
    heartbeat_s: float = Field(default=30.0, ge=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    rpc_timeout_s: float = Field(default=10.0, gt=0)
    prefetch_count: int = Field(default=256, ge=1, le=65535)
    max_event_bytes: int = Field(default=1 << 20, ge=1024)
    max_request_bytes: int = Field(default=1 << 20, ge=1024)
    data_dir: Path = Path("data")
    store: Literal["sqlite", "redis", "none"] = "sqlite"
    store_redis_url: SecretStr | None = None
    store_key_prefix: str = "bus_tasks:view:"
    done_ttl_s: float | None = Field(default=7 * 24 * 3600.0, gt=0)
    tombstone_ttl_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: SecretStr) -> SecretStr:
        check_broker_url(value.get_secret_value())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        _check_environment(set(settings_cls.model_fields))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _store_is_complete(self) -> Self:
        if self.store == "redis" and self.store_redis_url is None:
            raise ValueError(
                'store = "redis" needs store_redis_url (e.g. BUS_TASKS_STORE_REDIS_URL=redis://host:6379/0)'
            )
        return self

    @property
    def broker(self) -> str:
        return self.broker_url.get_secret_value()

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given (non-None) values replaced, validated again."""
        values = self.model_dump()
        values.update({k: v for k, v in changes.items() if v is not None})
        return Settings(**values)


def check_broker_url(url: str) -> None:
    """Refuse a broker URL no transport of bus_tasks serves (never echoing it: it may hold secrets).

    Raises:
        ConfigError: when the scheme is missing or unknown, or the address part does not parse.
    """
    schemes = ", ".join(f"{s}://" for s in BROKER_SCHEMES)
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"broker URL has no scheme: use one of {schemes}")
    if scheme.lower() not in BROKER_SCHEMES:
        raise ConfigError(f"broker URL scheme {scheme!r} is not supported: use one of {schemes}")
    try:
        urlsplit(url).port  # noqa: B018 - parsing is the check
    except ValueError:
        # The parser's message may quote a password (amqp://user:secret/ has no host): not shown.
        raise ConfigError(
            "broker URL is malformed: its user:password@host:port part does not parse"
        ) from None


def _check_environment(fields: set[str]) -> None:
    """A ``BUS_TASKS_*`` variable that names no setting is a typo: say so, do not ignore it."""
    known = {f"{ENV_PREFIX}{name}".upper() for name in fields} | {CONFIG_ENV}
    unknown = sorted(n for n in os.environ if n.upper().startswith(ENV_PREFIX) and n.upper() not in known)
    if unknown:
        raise ConfigError(f"unknown setting in the environment: {', '.join(unknown)}")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # keeps an IPv6 host's brackets
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
