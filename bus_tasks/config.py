"""One typed, validated settings object: defaults < config file < ``BUS_TASKS_*`` env < arguments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "BUS_TASKS_"
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
    log_level: str = "INFO"

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


def _check_environment(fields: set[str]) -> None:
    """A ``BUS_TASKS_*`` variable that names no setting is a typo: say so, do not ignore it."""
    unknown = sorted(
        name
        for name in os.environ
        if name.startswith(ENV_PREFIX)
        and name != CONFIG_ENV
        and name[len(ENV_PREFIX) :].lower() not in fields
    )
    if unknown:
        raise ValueError(f"unknown setting(s) in the environment: {', '.join(unknown)}")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # keeps an IPv6 host's brackets
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
