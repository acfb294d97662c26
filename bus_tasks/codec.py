"""JSON on the wire, through orjson: never pickle."""

from __future__ import annotations

import gc
import threading
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


class GcPaused:
    """The cyclic garbage collector paused for a ``with`` block (see :func:`gc_paused`).

    The collector is the process's: threads pausing at once share one pause, counted under a
    lock; the last to leave turns it back on if it was on before the first came in. (Each block
    remembering for itself whether it was on raced: a thread that came in while another was
    leaving read "off", the other turned it on, the first turned it off again and never back on.)

    A class rather than a generator-based context manager: leaving a generator's block raises
    and allocates its ``StopIteration`` just after the collector is back on, while the objects
    the block made are still young and counted, so every decode ended with one collection over
    all of them (8 ms of a 10,000-task listing, docs/performance.md). Here nothing is allocated
    after ``gc.enable()``: that collection comes when the caller next allocates, as it does
    after any decode that pauses the collector inline (and not at all if the result is dropped
    first).
    """

    __slots__ = ()

    _lock = threading.Lock()
    _pauses = 0  # blocks inside, in every thread
    _resume = False  # the collector was on when the first of them came in

    def __enter__(self) -> None:
        with GcPaused._lock:
            if GcPaused._pauses == 0:
                GcPaused._resume = gc.isenabled()
                gc.disable()
            GcPaused._pauses += 1

    def __exit__(self, *exc: object) -> None:
        # acquire() and release(), not ``with``: leaving a ``with`` makes a bound method, and
        # once the collector is on, any object made starts the collection this class avoids.
        lock = GcPaused._lock
        lock.acquire()
        try:
            GcPaused._pauses -= 1
            if GcPaused._pauses == 0 and GcPaused._resume:
                gc.enable()  # under the lock: no thread comes in between; nothing allocated after
        finally:
            lock.release()


def gc_paused() -> GcPaused:
    """Pause the cyclic garbage collector while many objects are built and kept (a large
    listing decoded, a store loaded): it would go over them again and again for nothing,
    since JSON makes no cycles. It halves the decode of a large listing."""
    return GcPaused()
