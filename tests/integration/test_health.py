"""``bus-tasks health``: each replica's check asks its own RPC queue, so aggregator-2's check
fails while aggregator-2 is down even though aggregator-1 answers the shared queue."""

from __future__ import annotations

import os
import subprocess
from functools import partial
from pathlib import Path

import pytest
from support.brokers import Broker
from support.processes import BIN, start_serve

from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _health(url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [str(BIN / "bus-tasks"), "health", "--broker", url, "--timeout", "5", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "ERROR", **(env or {})},
    )
    return done.returncode, done.stderr.strip()


def _healthy(url: str, name: str) -> bool:
    return _health(url, "--aggregator", name)[0] == 0


def test_each_replica_s_health_is_its_own_answer(rabbitmq_broker: Broker, tmp_path: Path) -> None:
    url = rabbitmq_broker.url
    first = start_serve(url, tmp_path / "1", BUS_TASKS_AGGREGATOR_NAME="agg-1")
    second = start_serve(url, tmp_path / "2", BUS_TASKS_AGGREGATOR_NAME="agg-2")
    try:
        # Each is listed by the other once it heard its heartbeat (every 5 s).
        for name in ("agg-1", "agg-2"):
            wait_until(partial(_healthy, url, name), timeout_s=30, what=f"{name} listed")
        assert _health(url, "--aggregator", "agg-1") == (0, "")
        # The default: the setting aggregator_name, as in each aggregator's own container.
        assert _health(url, env={"BUS_TASKS_AGGREGATOR_NAME": "agg-2"}) == (0, "")
        assert second.terminate() == 0
        assert _health(url, env={"BUS_TASKS_AGGREGATOR_NAME": "agg-2"}) == (
            1,
            "bus-tasks health: aggregator 'agg-2' is not serving (serving: agg-1)",
        )
        assert _health(url, "--aggregator", "agg-1") == (0, "")
    finally:
        first.kill()
        second.kill()
