"""JSON on the wire, through orjson: never pickle."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError
Fragment = orjson.Fragment  # JSON already encoded, embedded as it is by dumps()


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def dumps_member(key: str, value: Any) -> bytes:
    """``"key":value``, one member of a JSON object, encoded on its own (right-sized).

    Objects assembled from such members (``b"{" + b",".join(members) + b"}"``) skip the
    per-member encoding work: a large listing becomes one join.
    """
    return orjson.dumps({key: value}, option=orjson.OPT_UTC_Z)[1:-1]


def loads(body: bytes | str) -> Any:
    """Decode JSON; raises ``DecodeError`` on invalid JSON or UTF-8."""
    return orjson.loads(body)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many objects are built and kept (a large
    listing decoded, a store loaded): it would go over them again and again for nothing,
    since JSON makes no cycles. It halves the decode of a large listing."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
