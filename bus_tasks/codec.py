"""JSON on the wire, through orjson: never pickle."""

from __future__ import annotations

from typing import Any

import orjson

Fragment = orjson.Fragment
DecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON (``orjson.Fragment`` values are spliced in as is)."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def loads(body: bytes | str) -> Any:
    """Decode JSON; raises ``DecodeError`` on invalid JSON or UTF-8."""
    return orjson.loads(body)
