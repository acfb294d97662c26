"""How a command ends, as its user reads it: one line (or one JSON object) on stderr per failure,
and, for the long-running ones, which settings they started from."""

from __future__ import annotations

import argparse
import logging
import select
import sys
from pathlib import Path

from bus_tasks.config import CONFIG_ENV, CONFIG_FILE_NAME, ENV_PREFIX, Settings, config_file, redact_url
from bus_tasks.errors import BusTasksError, GeneralError, RemoteError, TooManyRequests
from bus_tasks.workers import render
from bus_tasks.workers.commands import EXIT_ERROR

log = logging.getLogger("bus_tasks.cli")

# Errors of these libraries reaching main() mean the broker (or the Redis store) is unusable.
BROKER_LIBRARIES = frozenset({"kombu", "amqp", "redis"})


def say_settings_source() -> None:
    """Which config file is read (it is found beside the code, not in the working directory)."""
    source = config_file()
    if source is None:
        log.info("settings: no config file, only defaults, %s* env vars and options", ENV_PREFIX)
    else:
        log.info("settings: config file %s, then %s* env vars, then options", source.resolve(), ENV_PREFIX)
    here = Path.cwd() / CONFIG_FILE_NAME
    if here.is_file() and (source is None or here.resolve() != source.resolve()):
        log.warning("%s is not read: name it in %s to use it", here, CONFIG_ENV)


def error_line(command: str, exc: BusTasksError) -> str:
    """The line a failed command prints: the aggregator's errors with their code; a local one (the
    broker unreachable, a deadline) in its own words, without VDSM's "General Exception" label."""
    label = f"{GeneralError.title}: "
    came_back = isinstance(exc, GeneralError | TooManyRequests | RemoteError)
    if not came_back and exc.message.startswith(label):
        return f"bus-tasks {command}: {exc.message.removeprefix(label)}"
    return f"bus-tasks {command}: error {exc.code}: {exc.message}"


def trouble(args: argparse.Namespace, settings: Settings, exc: Exception) -> int:
    """Expected trouble of the surroundings (broker or store unreachable, refused, a data
    directory that cannot be written) in one line; anything else keeps its traceback."""
    log.debug("%s failed", args.command, exc_info=True)
    library = type(exc).__module__.partition(".")[0]
    where = f" (broker {redact_url(settings.broker)})" if library in ("kombu", "amqp") else ""
    message = f"{type(exc).__name__}: {exc}{where}"
    report(args, GeneralError.code, message, f"bus-tasks {args.command}: {message}")
    return EXIT_ERROR


def stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader is gone (poll says POLLERR), rather than a
    connection of ours that broke with the same error."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def report(args: argparse.Namespace, code: int, message: str, text: str) -> None:
    """An error on stderr: ``text``, escaped (messages come from outside), or with ``--json``
    ``{"error": {"code": code, "message": message}}`` on one line."""
    if getattr(args, "json", False):
        print(render.to_json({"error": {"code": code, "message": message}}, pretty=False), file=sys.stderr)
    else:
        print(render.escape(text), file=sys.stderr)
