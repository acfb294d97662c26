"""Rough edges a new operator hit with the real ``bus-tasks`` command (issue 27), each as they
would notice it: exit statuses, the first lines on stderr, a restart under a supervisor."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from support.brokers import Broker
from support.cli_helpers import BusTasksProcess, cli_env, run_cli

READY = "aggregator ready"
STOPPED = "aggregator stopped"


def _serve(cleanup: contextlib.ExitStack, *args: str, cwd: Path, **env: str) -> BusTasksProcess:
    process = BusTasksProcess("serve", *args, cwd=cwd, env=cli_env(BUS_TASKS_LOG_LEVEL="INFO", **env))
    cleanup.callback(process.kill)
    return process


@pytest.mark.integration
def test_serve_http_gives_its_data_directory_to_the_next_serve_as_soon_as_its_aggregator_stops(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    args = ("--broker", rabbitmq_broker.url, "--data-dir", data_dir, "--http", "127.0.0.1:0")
    with contextlib.ExitStack() as cleanup:
        first = _serve(cleanup, *args, cwd=tmp_path)
        first.wait_for_line(READY, timeout_s=30)
        first.wait_for_line("http front door connected", timeout_s=30)
        first.popen.terminate()
        first.wait_for_line(STOPPED, timeout_s=20)
        # A supervisor restarting it at once: the HTTP door of the first may still be closing.
        second = _serve(cleanup, *args, cwd=tmp_path)
        second.wait_for_line(READY, timeout_s=30)
        assert "in use by another" not in second.log, second.log
        assert first.terminate(timeout_s=20) == 0, first.log
        assert second.terminate(timeout_s=20) == 0, second.log


@pytest.mark.parametrize("where", ["a regular file", "under /proc"])
def test_serve_on_a_data_directory_it_can_never_use_says_so_in_one_line_and_exits_2(
    tmp_path: Path, where: str
) -> None:
    if where == "a regular file":
        data_dir = tmp_path / "data"
        data_dir.write_text("not a directory\n")
    else:
        data_dir = Path("/proc/bus-tasks-test/data")
    done = run_cli("serve", "--broker", "memory://", "--data-dir", str(data_dir), cwd=tmp_path, timeout_s=30)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"bus-tasks serve: bad configuration: data_dir '{data_dir}' cannot be used: "), last
    assert "retrying" not in done.stderr
