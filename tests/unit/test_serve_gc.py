"""``bus-tasks serve`` runs its aggregator with serve's cyclic GC thresholds (a process-wide
setting: made by the composition root, not the library) and puts the previous ones back."""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.environment import without_settings

from bus_tasks.config import load_settings
from bus_tasks.testing import wait_until
from bus_tasks.workers.serve import serve
from bus_tasks.workers.wiring import SERVE_GC_THRESHOLD, serve_gc


@pytest.fixture
def own_signal_handlers() -> Iterator[None]:
    """serve installs its SIGTERM and SIGINT handlers: pytest's come back after."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("own_signal_handlers")
def test_serve_runs_the_aggregator_with_serve_gc_thresholds_and_puts_the_previous_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_settings(monkeypatch, tmp_path)
    settings = load_settings(broker_url="memory://", data_dir=tmp_path / "data")
    before = gc.get_threshold()
    assert before != SERVE_GC_THRESHOLD
    seen: list[tuple[int, ...]] = []

    def stop_once_seen() -> None:
        try:
            wait_until(lambda: gc.get_threshold() == SERVE_GC_THRESHOLD, timeout_s=20.0, what="serve's GC")
            seen.append(gc.get_threshold())
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # serve's own way to stop

    stopper = threading.Thread(target=stop_once_seen, daemon=True)
    stopper.start()
    assert serve(settings) == 0
    stopper.join(10.0)
    assert seen == [SERVE_GC_THRESHOLD]
    assert gc.get_threshold() == before


def test_serve_gc_puts_the_previous_thresholds_back_when_its_block_raises() -> None:
    before = gc.get_threshold()
    inside: list[tuple[int, ...]] = []

    def fail_inside() -> None:
        with serve_gc():
            inside.append(gc.get_threshold())
            raise RuntimeError("the aggregator failed")

    with pytest.raises(RuntimeError, match="the aggregator failed"):
        fail_inside()
    assert inside == [SERVE_GC_THRESHOLD]
    assert gc.get_threshold() == before
