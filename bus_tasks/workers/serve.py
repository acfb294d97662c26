"""Composition root of ``bus-tasks serve``: wire the aggregator (and its HTTP front door) from
settings and run it."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import threading

from prometheus_client import disable_created_metrics
from pydantic import ValidationError

from bus_tasks.config import Settings
from bus_tasks.core.model import describe_validation
from bus_tasks.errors import ConfigError, StoreUnavailable
from bus_tasks.store import DataDirLock
from bus_tasks.workers import systemd, wiring
from bus_tasks.workers.options import parse_listen

log = logging.getLogger("bus_tasks.serve")

MIN_TOKEN_CHARS = 16
# Why a data directory cannot be locked, when only the operator can change it.
_UNUSABLE = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.ENOENT, errno.EISDIR, errno.ELOOP,
     errno.ENAMETOOLONG}
)  # fmt: skip


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """``bus-tasks serve``: its options over the settings, then :func:`serve`.

    Raises:
        ConfigError: when the options or the HTTP settings do not go together.
    """
    try:
        settings = settings.with_overrides(
            data_dir=args.data_dir,
            http_listen=args.http,
            http_control=args.http_control,
            http_allow_remote=args.http_allow_remote,
        )
    except ValidationError as exc:
        raise ConfigError(describe_validation(exc)) from None
    return serve(settings)


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status.

    Raises:
        ConfigError: when the HTTP settings cannot be served (see :func:`check_http`).
    """
    check_http(settings)
    # A counter's creation time is a series of its own (128 of 612 lines); nothing here reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    wiring.warn_if_identity_off(settings, log)
    wiring.warn_if_authorization_off(settings, log)
    stop = wiring.stop_on_signals(log)
    lock = DataDirLock(settings.data_dir)
    # One data directory, one process: a second serve on it would fight over the file.
    if settings.store == "sqlite" and not _lock(lock, stop):
        log.info("stopped before the data directory could be locked")
        return 0
    try:
        aggregator = wiring.aggregator(settings, stop=stop)
        http = wiring.http_server(settings, aggregator, stop=stop) if settings.http_listen else None
        if http is not None:
            try:
                http.start()
            except BaseException:
                aggregator.store.close()  # nothing else was opened yet
                raise
        systemd.notify_when_ready(aggregator.ready, stop)  # at its "aggregator ready" line
        try:
            with wiring.serve_gc():
                aggregator.run(stop)
        finally:
            # The store is closed: the next serve may have the directory while this one's HTTP
            # door ends its streams (systemd restarts it at once, not when the door is done).
            lock.release()
            if http is not None:
                http.stop()
    finally:
        lock.release()
    return 0


def check_http(settings: Settings) -> None:
    """The HTTP front door's address is loopback unless told otherwise; control needs a token.

    Raises:
        ConfigError: naming the setting (never the token).
    """
    if not settings.http_listen:
        if settings.http_control:
            log.warning("http_control is set but http_listen is not: no HTTP front door runs")
        return
    host, port = parse_listen(settings.http_listen)
    if port > 65535:
        raise ConfigError(f"http_listen {settings.http_listen!r}: the port is more than 65535")
    if not settings.http_allow_remote and not is_loopback(host):
        raise ConfigError(
            f"http_listen {settings.http_listen!r} is not a loopback address: anyone reaching it would"
            " read every task; give --http-allow-remote (or http_allow_remote = true) to mean it"
        )
    if settings.authorization == "on":
        return  # stop and clear over HTTP are the callers' roles' to allow (http_tokens)
    token = settings.http_token
    if settings.http_control and (token is None or len(token.get_secret_value()) < MIN_TOKEN_CHARS):
        raise ConfigError(
            f"--http-control (http_control) needs http_token, at least {MIN_TOKEN_CHARS} characters"
            " (e.g. BUS_TASKS_HTTP_TOKEN in the environment)"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (a name other than localhost is not trusted to)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unusable(exc: StoreUnavailable) -> bool:
    """Whether the lock failed for a reason only the operator can fix (a path that is a file, not
    writable by this user, under /proc), not one that passes (a full disk, remounted read-only)."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in _UNUSABLE


def listen_address(text: str) -> str:
    """``--http``'s value: ``HOST:PORT`` (IPv6 in brackets), kept as given."""
    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _lock(lock: DataDirLock, stop: threading.Event) -> bool:
    """Take the data directory's lock, waiting (with back-off) while it cannot be made (a full or
    read-only disk); False if stopped first.

    Raises:
        DataDirInUse: when another process holds it.
        ConfigError: when the directory can never be used as it is (waiting would be forever).
    """
    delay_s = 0.5
    warned = False
    while True:
        try:
            lock.acquire()
            if warned:
                log.warning("data directory %s can be locked again", lock.path.parent)
            return True
        except StoreUnavailable as exc:
            if _unusable(exc):
                raise ConfigError(
                    f"data_dir {str(lock.path.parent)!r} cannot be used: {exc.__cause__}"
                    " (give --data-dir, or data_dir, a directory this user may write)"
                ) from None
            if not warned:
                log.warning("%s; retrying", exc)
                warned = True
        if stop.wait(delay_s):
            return False
        delay_s = min(delay_s * 2, 5.0)
