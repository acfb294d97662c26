"""Say what is wrong with a setting where the operator put it: the variable, the file or the
option, a did-you-mean for a misspelt key, words instead of a regular expression."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

# What the patterned settings accept, in words (the pattern itself tells an operator little).
NAME_WORDS = (
    "lower-case letters, digits, '_', '.' or '-', starting with a letter or digit, at most 64 characters"
)
_PATTERN_WORDS = {
    "aggregator_name": f"must be empty or {NAME_WORDS}",
    "test_subsystem": f"must be empty or {NAME_WORDS}",
    "event_log_max_age": "must be a whole number and a unit (Y, M, D, h, m or s), e.g. 7D",
    "http_listen": "must be HOST:PORT (an IPv6 host in brackets), e.g. 127.0.0.1:8080",
    "stomp_metrics": "must be HOST:PORT (an IPv6 host in brackets), e.g. 127.0.0.1:9464",
}


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def explain(
    exc: ValidationError,
    *,
    fields: Collection[str],
    source: Path | None,
    env_prefix: str,
    options: Collection[str] = (),
    limit: int = 20,
) -> str:
    """One line naming each bad setting where it was given (never its value)."""
    in_file = _file_keys(source)
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:limit]:
        key = str(error["loc"][0]) if error["loc"] else "value"
        path = ".".join(str(part) for part in error["loc"]) or "value"
        variable = f"{env_prefix}{key}".upper()
        if error["type"] == "extra_forbidden":
            where = f" in config file {source}" if key in in_file else ""
            parts.append(f"{path}: unknown setting{where}{did_you_mean(key, fields)}")
            continue
        if key in options:
            where = " (from the command line)"
        elif variable in {name.upper() for name in os.environ}:
            where = f" (from environment variable {variable})"
        elif key in in_file:
            where = f" (from config file {source})"
        else:
            where = ""  # a rule between settings: the message names them
        what = _PATTERN_WORDS.get(path) if error["type"] == "string_pattern_mismatch" else None
        parts.append(f"{path}: {what or error['msg'].removeprefix('Value error, ')}{where}")
    # Names in the input (an unknown key) must not break the one-line error text.
    return "; ".join(parts).encode("unicode_escape").decode("ascii")


def _file_keys(source: Path | None) -> set[str]:
    if source is None:
        return set()
    try:
        with source.open("rb") as file:
            table: dict[str, Any] = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        return set()
    return set(table)
