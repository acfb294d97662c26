"""codec.gc_paused: the collector paused for a block, and nothing collected on the way out."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bus_tasks import codec
from bus_tasks.protocol import jsonrpc
from bus_tasks.protocol.replies import unpack

# More containers than the young generation's threshold (700 by default) by far.
MANY = 20 * gc.get_threshold()[0]
THREADS, PAUSES = 4, 20_000


@contextmanager
def collections_started(here: list[int]) -> Iterator[None]:
    """Appends the generation of each collection this thread starts within the block."""
    me = threading.get_ident()

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and threading.get_ident() == me:
            here.append(info["generation"])

    gc.callbacks.append(record)
    try:
        yield
    finally:
        gc.callbacks.remove(record)


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    """On before and after each test, as the process has it. Not put back to what it was: a
    thread that another module left behind may be inside a pause right then, and "off" restored
    after that pause ended left the collector off for the rest of the worker (seen in CI)."""
    gc.enable()
    try:
        yield
    finally:
        gc.enable()


def test_the_collector_is_paused_inside_and_back_on_after() -> None:
    with codec.gc_paused():
        inside = gc.isenabled()
    assert (inside, gc.isenabled()) == (False, True)


def test_a_collector_paused_before_stays_paused() -> None:
    gc.disable()
    with codec.gc_paused():
        pass
    assert not gc.isenabled()


def test_the_collector_is_back_on_after_an_error_in_the_block() -> None:
    with pytest.raises(ValueError, match="boom"), codec.gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_leaving_starts_no_collection_over_what_the_block_made() -> None:
    # A generator-based context manager allocated its StopIteration after gc.enable(): one
    # collection over everything the block had just made, inside every decode.
    started: list[int] = []
    kept: list[list[int]] = []
    with collections_started(started):
        with codec.gc_paused():
            kept.extend([i] for i in range(MANY))
        on_exit = len(started)
    assert on_exit == 0
    assert len(kept) == MANY


def test_the_clients_decode_of_a_large_listing_starts_no_collection() -> None:
    tasks = {f"task-{i}": {"id": f"task-{i}", "tags": ["a", "b"], "state": "running"} for i in range(MANY)}
    body = jsonrpc.result_body("call", tasks)
    del tasks
    started: list[int] = []
    gc.collect()  # what building the body left to collect is not the decode's
    with collections_started(started):
        result = unpack(body)
        during = len(started)
    assert during == 0
    assert len(result) == MANY


def test_threads_pausing_at_once_leave_the_collector_on() -> None:
    # Seen in CI: one thread read "paused" while another was leaving, the other then resumed
    # and the first paused again, and nobody resumed after it: the collector stayed off for the
    # whole process (a watcher's decode_feed beside a client's reply decode).
    start = threading.Barrier(THREADS)

    def pause_often() -> None:
        start.wait()
        for _ in range(PAUSES):
            with codec.gc_paused():
                pass

    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows: the race shows
    try:
        threads = [threading.Thread(target=pause_often) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60.0)
    finally:
        sys.setswitchinterval(switching)
    assert not any(thread.is_alive() for thread in threads)
    assert gc.isenabled()
