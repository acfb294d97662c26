"""The benchmark harness keeps working: a quick run of the broker-free figures exits 0 and prints them.

No timing is asserted here: the figures themselves are for ``make bench`` (docs/performance.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_quick_bench_of_core_and_selectivity_exits_0_and_prints_each_figure() -> None:
    pytest.importorskip("celery", reason="the core figure's baseline is Celery: pip install -e '.[bench]'")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "core,selectivity"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    table = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| ")]
    printed = {cells[1].strip(): [c.strip() for c in cells[2:-1]] for cells in table}
    assert {"core apply", "core memory", "selectivity"} <= printed.keys(), output
    for name in ("core apply", "core memory", "selectivity"):
        ours, baseline, ratio, target, met, sizes = printed[name]
        assert ours, output
        assert baseline, output
        assert sizes, output
        assert float(ratio) > 0, output
        assert target.startswith((">=", "<=")), output
        assert met in ("yes", "NO"), output


def test_the_ingest_path_tool_reads_every_event_through_the_receivers_whole_delivery_path(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import ingest_path
    from bus_tasks.transport.kombu import frames

    taken: list[int] = []
    whole = frames._whole_delivery

    def counted(*args: Any) -> Any:
        found = whole(*args)
        if found is not None:
            taken.append(found[-1])  # its delivery tag
        return found

    monkeypatch.setattr(frames, "_whole_delivery", counted)

    assert ingest_path.main(["--tasks", "40", "--reps", "1"]) == 0

    assert capsys.readouterr().out.startswith("120 events: CPU ")
    # each read of 16 KiB cuts one delivery at its end, which goes through py-amqp: the others go whole
    assert len(taken) >= 110, taken
    assert taken == sorted(set(taken))
