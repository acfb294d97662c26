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


# -- configuration errors say where the bad setting is, in words ----------------------------


def test_a_bad_value_in_the_environment_is_blamed_on_its_variable_not_the_config_file(tmp_path: Path) -> None:
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_RPC_TIMEOUT_S="abc"))
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith("bus-tasks: bad configuration: rpc_timeout_s: "), line
    assert line.endswith(" (from environment variable BUS_TASKS_RPC_TIMEOUT_S)"), line
    assert "config file" not in line


def test_a_misspelt_key_in_the_config_file_gets_a_did_you_mean(tmp_path: Path) -> None:
    config = tmp_path / "bus_tasks.toml"
    config.write_text("rpc_timout_s = 3\n")
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_CONFIG=str(config)))
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"bus-tasks: bad configuration: rpc_timout_s: unknown setting in config file {config}"
        " (did you mean rpc_timeout_s?)\n",
    )


def test_a_bad_aggregator_name_is_explained_in_words_not_a_regular_expression(tmp_path: Path) -> None:
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_AGGREGATOR_NAME="Main Node"))
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "bus-tasks: bad configuration: aggregator_name: must be empty or lower-case letters, digits,"
        " '_', '.' or '-', starting with a letter or digit, at most 64 characters"
        " (from environment variable BUS_TASKS_AGGREGATOR_NAME)\n",
    )


def test_serve_says_at_start_which_config_file_it_reads_and_that_one_in_the_working_directory_is_not(
    tmp_path: Path,
) -> None:
    config = tmp_path / "named.toml"
    config.write_text('log_level = "INFO"\n')
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bus_tasks.toml").write_text("rpc_timout_s = 3\n")  # a typo, never read
    with contextlib.ExitStack() as cleanup:
        serve = _serve(
            cleanup, "--broker", "memory://", "--data-dir", str(tmp_path / "data"), cwd=tmp_path,
            BUS_TASKS_CONFIG=str(config),
        )  # fmt: skip
        serve.wait_for_line(READY, timeout_s=30)
        assert serve.terminate(timeout_s=20) == 0, serve.log
    said = serve.lines[serve.wait_for_line("settings: ", timeout_s=1)]
    assert said.endswith(f"settings: config file {config}, then BUS_TASKS_* env vars, then options"), said
    ignored = serve.lines[serve.wait_for_line("is not read", timeout_s=1)]
    assert f"WARNING bus_tasks.cli: {tmp_path / 'config' / 'bus_tasks.toml'} is not read:" in ignored
