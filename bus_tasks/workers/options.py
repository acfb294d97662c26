"""The options ``bus-tasks`` shares between its commands, and the types that check their values.

A bad value is refused by argparse before anything is contacted, in words a user knows: the
option, what it takes, and what was given (``argument --timeout: must be a number of seconds
more than 0, not 'x'``), never the name of a Python function.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bus_tasks import codec
from bus_tasks.config import CONFIG_FILE_NAME, ENV_PREFIX, LOG_LEVELS, Settings, redact_url
from bus_tasks.core.model import TAG_PATTERN

DISTRIBUTION = "bus_tasks"
# The tag alphabet as a user reads it: the model's pattern without its anchors.
TAG_SYNTAX = TAG_PATTERN.removeprefix("^").removesuffix("$")
_TAG = re.compile(TAG_PATTERN)


def package_version() -> str:
    """The installed version of bus_tasks (``--version``)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def positive_int(text: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, at least 1, not {text!r}")
    return int(text)


def count(text: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more, not {text!r}")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds more than 0, not {text!r}")
    return value


def log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) as a pair."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def listen_text(text: str) -> str:
    """``HOST:PORT`` checked, kept as written (for a setting)."""
    listen(text)
    return text


def tag(text: str) -> str:
    if _TAG.fullmatch(text):
        return text
    hint = "repeat --tag for each tag"
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > 1 and all(_TAG.fullmatch(part) for part in parts):
        hint += f" ({' '.join(f'--tag {part}' for part in parts)})"
    raise argparse.ArgumentTypeError(f"{text!r} is not a tag: a tag matches {TAG_SYNTAX}; {hint}")


def param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``bus-tasks call``: VALUE as JSON if it is JSON, else as a string;
    ``KEY=@FILE`` takes the JSON in FILE."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (a VALUE is JSON or a string; KEY=@FILE reads JSON from FILE)"
        )
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return key, codec.loads(path.read_bytes())
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"{text}: cannot read {path}: {exc.strerror}") from None
        except codec.DecodeError as exc:
            raise argparse.ArgumentTypeError(f"{text}: {path} is not JSON: {exc}") from None
    try:
        return key, codec.loads(value)
    except codec.DecodeError:
        return key, value


def from_setting(name: str) -> str:
    """Where the default of an option comes from: the setting ``name``, its env var, the file."""
    default = Settings.model_fields[name].default
    shown = redact_url(default.get_secret_value()) if name == "broker_url" else default
    return f"setting {name}: ${ENV_PREFIX}{name.upper()}, else {CONFIG_FILE_NAME}, else {shown}"


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is neither an option nor the value of
    ``--log-level`` or ``--broker`` given before it (:func:`global_options`); None if none."""
    words = iter(argv)
    for word in words:
        if word in ("--log-level", "--broker"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def global_options(parser: argparse.ArgumentParser, *, broker: bool) -> None:
    """``--log-level`` (and ``--broker``): before the command or after it, written once here.

    Left out of the namespace unless given (``SUPPRESS``), so a command's parser never hides a
    value given before the command.
    """
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=argparse.SUPPRESS,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default: {from_setting('log_level')}; demo: WARNING)",
    )
    parser.add_argument(
        "--broker",
        default=argparse.SUPPRESS,
        metavar="URL",
        # Taken, unlisted, by a command that has its own: refused with a word, not "unrecognized".
        help="broker URL: amqp://user:pass@host:5672/vhost, redis://host:6379/0 or memory:// "
        f"(default: {from_setting('broker_url')})"
        if broker
        else argparse.SUPPRESS,
    )


def client_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that calls the aggregator."""
    global_options(parser, broker=True)
    timeout_option(parser, "deadline of the call")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print the result as JSON, and errors as JSON on stderr: {"error": {"code": C, "message": M}}',
    )


def timeout_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--timeout S``: ``what`` it bounds; the setting rpc_timeout_s by default."""
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="S",
        help=f"{what}, in seconds (default: {from_setting('rpc_timeout_s')})",
    )
