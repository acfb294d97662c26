"""One typed, validated settings object: defaults < config file < ``BUS_TASKS_*`` env < arguments."""

from __future__ import annotations

import os
import tomllib
from importlib.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from bus_tasks.authorization import AuthorizationMode, Roles
from bus_tasks.broker_login import BrokerLogin, LoginMethod, certificate_common_name
from bus_tasks.config_explain import did_you_mean, explain
from bus_tasks.core.model import SUBSYSTEM_PATTERN
from bus_tasks.errors import ConfigError
from bus_tasks.identity import IDENTITY_PATTERN, IdentityMode, TrustPolicy
from bus_tasks.urls import broker_urls
from bus_tasks.urls import redact_url as redact_url  # noqa: PLC0414 - re-exported: bus_tasks imports it here

ENV_PREFIX = "BUS_TASKS_"
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss", "memory")
CONFIG_ENV = "BUS_TASKS_CONFIG"
CONFIG_FILE_NAME = Path("config/bus_tasks.toml")
# Found from this module, not the working directory: every process of a checkout reads the same
# file. An installed package (the image) has none, and runs on defaults and the environment.
DEFAULT_CONFIG_FILE = Path(__file__).resolve().parents[1] / CONFIG_FILE_NAME

Identity = Annotated[str, StringConstraints(pattern=IDENTITY_PATTERN)]
SubsystemName = Annotated[str, StringConstraints(pattern=SUBSYSTEM_PATTERN)]
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
_BROKER_SSL_FILES = ("broker_ssl_ca", "broker_ssl_cert", "broker_ssl_key")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)

# Defaults that more than Settings states (the aggregator's policy, keyword defaults of the library,
# the CLI's help), written once.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_RPC_TIMEOUT_S = 10.0
DEFAULT_PREFETCH_COUNT = 256
DEFAULT_MAX_EVENT_BYTES = 1 << 20
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
# Below the broker's own limit (RabbitMQ 4.x refuses messages over 16 MiB, 3.x over 128 MiB).
DEFAULT_MAX_REPLY_BYTES = 15 << 20
DEFAULT_MAX_BATCH_CALLS = 100
DEFAULT_DONE_TTL_S = 7 * 24 * 3600.0
DEFAULT_TOMBSTONE_TTL_S = 30 * 24 * 3600.0
DEFAULT_DATA_DIR = Path("data")
DEFAULT_LOG_LEVEL: LogLevel = "INFO"
# What one hostile client may hold of a front door (SPEC 18).
DEFAULT_STOMP_CONNECT_TIMEOUT_S = 10.0
DEFAULT_STOMP_MAX_CONNECTIONS = 1_000
DEFAULT_STOMP_MAX_PENDING = 100
DEFAULT_STOMP_MAX_OUTBUF_BYTES = 16 << 20
DEFAULT_HTTP_MAX_WATCHERS = 1_000
DEFAULT_HTTP_MAX_BODY_BYTES = 64 * 1024
DEFAULT_HTTP_IDLE_TIMEOUT_S = 30.0
MIN_HTTP_TOKEN_CHARS = 16


def config_file() -> Path | None:
    """The config file in force: ``$BUS_TASKS_CONFIG``, else ``DEFAULT_CONFIG_FILE`` if it exists."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(f"{CONFIG_ENV} names {named!r}, which is not a file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


class _ConfigFile(TomlConfigSettingsSource):
    """The config file, read so that whatever it holds gives settings or a ConfigError."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            return super()._read_file(file_path)
        except tomllib.TOMLDecodeError:
            raise  # load_settings says where
        # What tomllib lets through: bytes that are not UTF-8, arrays or tables nested past
        # Python's recursion limit, an integer of more digits than int() reads.
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {file_path}: not UTF-8 text (at byte {exc.start})") from None
        except RecursionError:
            raise ConfigError(f"config file {file_path}: values nested too deeply") from None
        except ValueError as exc:
            raise ConfigError(f"config file {file_path}: a value cannot be read: {exc}") from None


class Settings(BaseSettings):
    """Everything a bus_tasks process can be told; misspelled keys are errors."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    broker_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672//")
    redis_key_prefix: str = ""
    heartbeat_s: float = Field(default=30.0, ge=0)
    connect_timeout_s: float = Field(default=DEFAULT_CONNECT_TIMEOUT_S, gt=0)
    rpc_timeout_s: float = Field(default=DEFAULT_RPC_TIMEOUT_S, gt=0)
    prefetch_count: int = Field(default=DEFAULT_PREFETCH_COUNT, ge=1, le=65535)
    max_event_bytes: int = Field(default=DEFAULT_MAX_EVENT_BYTES, ge=1024)
    max_request_bytes: int = Field(default=DEFAULT_MAX_REQUEST_BYTES, ge=1024)
    max_reply_bytes: int = Field(default=DEFAULT_MAX_REPLY_BYTES, ge=16384)
    max_batch_calls: int = Field(default=DEFAULT_MAX_BATCH_CALLS, ge=1, le=10_000)
    data_dir: Path = DEFAULT_DATA_DIR
    store: Literal["sqlite", "redis", "none"] = "sqlite"
    store_redis_url: SecretStr | None = None
    store_key_prefix: str = "bus_tasks:view:"
    done_ttl_s: float | None = Field(default=DEFAULT_DONE_TTL_S, gt=0)
    tombstone_ttl_s: float = Field(default=DEFAULT_TOMBSTONE_TTL_S, gt=0)
    # RabbitMQ: "stream" (one log every aggregator reads from its own offset: any number of
    # them, active-active) or "queue" (a queue per aggregator). Elsewhere always a queue.
    event_log: Literal["stream", "queue"] = "stream"
    # Retention of the stream, when a process of this configuration creates it (RabbitMQ's
    # x-max-age: 7D, 12h, 30m ...); an existing stream keeps its own (change it by policy).
    event_log_max_age: str = Field(default="7D", pattern=r"^[1-9][0-9]*[YMDhms]$")
    # The RPC and control queues: "classic" or "quorum" (replicated over a RabbitMQ cluster).
    queue_type: Literal["classic", "quorum"] = "classic"
    # This aggregator's name among several ("" : the host's); off the stream, its events queue
    # is named after it, so give each aggregator of one broker its own.
    aggregator_name: str = Field(default="", pattern=r"^$|^[a-z0-9][a-z0-9_.-]{0,63}$")
    # The subsystem of `bus-tasks inject`'s test tasks, owned by the aggregator; "" for none.
    test_subsystem: str = Field(default="test", pattern=r"^$|^[a-z0-9][a-z0-9_.-]{0,63}$")
    # `bus-tasks serve`'s HTTP front door (API, watch, metrics, web view) on HOST:PORT; "" : off.
    http_listen: str = Field(default="", pattern=r"^$|^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):[0-9]{1,5}$")
    # Listen on another address than loopback (the read API has no authentication).
    http_allow_remote: bool = False
    # Stop and clear from HTTP (the web view), for a caller with http_token (Bearer).
    http_control: bool = False
    http_token: SecretStr | None = None
    # -- Who may call what (SPEC 16, docs/authorization.md). "on": every call is denied unless
    # its caller's role allows it; "off" (the default): anyone who reaches a door may call
    # anything (serve warns once). Identities: broker users (AMQP user_id), client
    # certificates' CNs (STOMP), the names of http_tokens (HTTP).
    authorization: AuthorizationMode = "off"
    readers: list[Identity] = []
    operators: list[Identity] = []
    admins: list[Identity] = []
    # The front doors' broker users: only they may say for whom they call.
    front_doors: list[Identity] = []
    # Identity -> its HTTP bearer token (at least MIN_HTTP_TOKEN_CHARS; never logged).
    http_tokens: dict[Identity, SecretStr] = {}

    @field_validator("http_tokens")
    @classmethod
    def _tokens_are_long_and_distinct(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        short = sorted(i for i, t in value.items() if len(t.get_secret_value()) < MIN_HTTP_TOKEN_CHARS)
        if short:
            raise ValueError(
                f"the tokens of {', '.join(short)} are shorter than {MIN_HTTP_TOKEN_CHARS} characters"
            )
        if len({t.get_secret_value() for t in value.values()}) != len(value):
            raise ValueError("two identities have the same token: each needs its own")
        return value

    @model_validator(mode="after")
    def _authorization_is_complete(self) -> Self:
        if self.authorization == "on":
            if not (self.readers or self.operators or self.admins):
                raise ValueError(
                    'authorization = "on" needs readers, operators or admins:'
                    " without any, every call is denied"
                )
            if self.http_token is not None:
                raise ValueError(
                    'with authorization = "on", HTTP callers are named by http_tokens = {identity = "token"},'
                    " not http_token"
                )
        return self

    @property
    def roles(self) -> Roles:
        """Who holds which role (SPEC 16)."""
        return Roles.of(readers=self.readers, operators=self.operators, admins=self.admins)

    # -- end of who may call what

    # The STOMP front door's bounds (`bus-tasks stomp`): CONNECT (TLS handshake included) within
    # this long; connections at once; requests in flight per connection; reply bytes waiting
    # unread for one client before it is disconnected.
    stomp_connect_timeout_s: float = Field(default=DEFAULT_STOMP_CONNECT_TIMEOUT_S, gt=0)
    stomp_max_connections: int = Field(default=DEFAULT_STOMP_MAX_CONNECTIONS, ge=1)
    stomp_max_pending: int = Field(default=DEFAULT_STOMP_MAX_PENDING, ge=1)
    stomp_max_outbuf_bytes: int = Field(default=DEFAULT_STOMP_MAX_OUTBUF_BYTES, ge=64 * 1024)
    # `bus-tasks stomp`'s own /metrics on HOST:PORT (no HOST: loopback); "" : off.
    stomp_metrics: str = Field(default="", pattern=r"^$|^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):[0-9]{1,5}$")
    # The HTTP front door's: /api/watch streams at once; a request body's bytes; how long a
    # connection may go without a whole request (from its start or its last answer), and a
    # write of the watch's events may wait for a client that does not read.
    http_max_watchers: int = Field(default=DEFAULT_HTTP_MAX_WATCHERS, ge=1)
    http_max_body_bytes: int = Field(default=DEFAULT_HTTP_MAX_BODY_BYTES, ge=1024)
    http_idle_timeout_s: float = Field(default=DEFAULT_HTTP_IDLE_TIMEOUT_S, gt=0)
    log_level: LogLevel = DEFAULT_LOG_LEVEL
    # Trust on the bus (SPEC 15, docs/security.md). "broker": believe a message only when the
    # user_id RabbitMQ validated may say it; "off": believe everyone (a warning at start).
    identity: IdentityMode = "off"
    # Subsystem -> identities that may publish for it, besides the identity named after it.
    publishers: dict[SubsystemName, list[Identity]] = {}
    # The identities of aggregators: they clear, expire, answer and own the test tasks.
    aggregators: list[Identity] = []
    # TLS to the broker (amqps://): PEM files; never logged. EXTERNAL: log in by certificate.
    broker_ssl_ca: Path | None = Field(default=None, repr=False)
    broker_ssl_cert: Path | None = Field(default=None, repr=False)
    broker_ssl_key: Path | None = Field(default=None, repr=False)
    # None: the client library's default (AMQPLAIN, then PLAIN, with the URL's user:password).
    broker_login_method: LoginMethod | None = None

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
            sources.append(_ConfigFile(settings_cls, toml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _store_is_complete(self) -> Self:
        if self.store == "redis" and self.store_redis_url is None:
            raise ValueError(
                'store = "redis" needs store_redis_url (e.g. BUS_TASKS_STORE_REDIS_URL=redis://host:6379/0)'
            )
        return self

    @model_validator(mode="after")
    def _trust_is_complete(self) -> Self:
        scheme = self.broker.partition("://")[0].lower()
        given = [name for name in _BROKER_SSL_FILES if getattr(self, name) is not None]
        if given and scheme != "amqps":
            raise ValueError(f"{', '.join(given)} need an amqps:// broker_url (TLS to RabbitMQ)")
        if (self.broker_ssl_cert is None) != (self.broker_ssl_key is None):
            raise ValueError("broker_ssl_cert and broker_ssl_key go together (a certificate and its key)")
        for name in given:
            path = getattr(self, name)
            if not (path.is_file() and os.access(path, os.R_OK)):
                # The path is not repeated: key paths stay out of logs.
                raise ValueError(f"{name} does not name a readable file")
        if self.broker_login_method == "EXTERNAL":
            if self.broker_ssl_cert is None:
                raise ValueError(
                    'broker_login_method = "EXTERNAL" logs in with a client certificate: '
                    "give broker_ssl_cert and broker_ssl_key (and an amqps:// broker_url)"
                )
            try:
                certificate_common_name(self.broker_ssl_cert.read_bytes())
            except ValueError as exc:
                raise ValueError(f"broker_ssl_cert: {exc} (EXTERNAL logs in as its CN)") from None
        if self.identity == "broker":
            if scheme not in _AMQP_SCHEMES:
                raise ValueError(
                    'identity = "broker" needs RabbitMQ (amqp:// or amqps://): only it vouches for user_id'
                )
            if not self.aggregators:
                raise ValueError(
                    'identity = "broker" needs aggregators = ["identity", ...]: '
                    "without them no reply, clear or presence beat is believed"
                )
        return self

    @property
    def trust(self) -> TrustPolicy:
        """Whom this process believes (SPEC 15); with authorization on, the admins publish test
        tasks (SPEC 16: ``bus-tasks inject`` is theirs) besides the identities named for them."""
        publishers = dict(self.publishers)
        if self.authorization == "on" and self.test_subsystem:
            test = self.test_subsystem
            publishers[test] = [*publishers.get(test, []), *self.admins]
        return TrustPolicy.of(self.identity, publishers=publishers, aggregators=self.aggregators)

    @property
    def broker_login(self) -> BrokerLogin:
        """TLS and the login method to the broker (file paths kept out of its repr)."""
        return BrokerLogin(
            ca_file=self.broker_ssl_ca,
            cert_file=self.broker_ssl_cert,
            key_file=self.broker_ssl_key,
            method=self.broker_login_method,
        )

    @property
    def broker(self) -> str:
        return self.broker_url.get_secret_value()

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given (non-None) values replaced, validated again."""
        values = self.model_dump()
        values.update({k: v for k, v in changes.items() if v is not None})
        return Settings(**values)


# The settings only a process that keeps the view (``bus-tasks serve``) reads, and what a process
# that keeps none has instead.
_NO_STORE: dict[str, Any] = {
    "data_dir": DEFAULT_DATA_DIR,
    "store": "none",
    "store_redis_url": None,
    "store_key_prefix": Settings.model_fields["store_key_prefix"].default,
}
STORE_SETTINGS = tuple(_NO_STORE)


def load_settings(*, with_store: bool = True, **overrides: object) -> Settings:
    """Settings from the config file and the environment, then ``overrides``; misspellings are errors.

    Args:
        with_store: False for a process that keeps no view (every client command): the store
            settings (``STORE_SETTINGS``) are then not read, so a bad one cannot stop it, and
            ``store`` is ``"none"``.

    Raises:
        ConfigError: naming every bad or unknown setting, never echoing its value.
    """
    try:
        source = config_file()
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    try:
        # Given to the constructor, these outrank the file and the environment, whose values
        # for them are then never validated.
        unread = {} if with_store else _NO_STORE
        settings = Settings(**unread).with_overrides(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {source}: {exc}") from None
    except ValidationError as exc:
        given = {name for name, value in overrides.items() if value is not None}
        fields = Settings.model_fields
        raise ConfigError(
            explain(exc, fields=fields, source=source, env_prefix=ENV_PREFIX, options=given)
        ) from None
    except SettingsError as exc:  # e.g. BUS_TASKS_ADMINS=alice: a list in the environment is JSON
        raise ConfigError(
            f"{exc}: a list or a table in a {ENV_PREFIX}* variable is written as JSON"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {source}: {exc}") from None
    return settings


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
    nodes = broker_urls(url)
    if len({node.partition("://")[0].lower() for node in nodes}) > 1:
        raise ConfigError("broker URL names nodes of different schemes: one broker, one scheme")
    try:
        for node in nodes:
            urlsplit(node).port  # noqa: B018 - parsing is the check
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
        hints = "".join(did_you_mean(name.upper(), known) for name in unknown)
        raise ConfigError(f"unknown setting in the environment: {', '.join(unknown)}{hints}")
