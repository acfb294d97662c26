"""codec.gc_paused: the collector paused for a block, and nothing collected on the way out."""

from __future__ import annotations

import gc
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
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if not was:
            gc.disable()


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
