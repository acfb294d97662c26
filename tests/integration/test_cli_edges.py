"""Rough edges a new operator hit with the real ``bus-tasks`` command (issue 27), each as they
would notice it: exit statuses, the first lines on stderr, a restart under a supervisor."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.brokers import Broker, SystemFactory
from support.cli_helpers import BUS_TASKS, BusTasksProcess, cli_env, run_cli, run_cli_on_terminal
from support.processes import Process

from bus_tasks.core.model import State
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until

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
        # Its watch, failing over when the aggregator stopped, was given up, not left waiting.
        assert "did not end within" not in first.log
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
    assert last.startswith(f"bus-tasks serve: bad configuration: data_dir '{data_dir}' cannot be used: "), (
        last
    )
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


# -- memory:// and files given on the command line ------------------------------------------


@pytest.mark.parametrize(
    "command", [["tasks"], ["status", "00000000-0000-4000-8000-000000000000"], ["stomp"]]
)
def test_a_command_that_needs_another_process_refuses_memory_at_once(
    tmp_path: Path, command: list[str]
) -> None:
    # Within the 10 s RPC deadline it would otherwise wait out: the refusal is immediate.
    done = run_cli(*command, "--broker", "memory://", cwd=tmp_path, timeout_s=5)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"bus-tasks {command[0]}: bad configuration: memory:// lives inside one process: no other process"
        f" can answer {command[0]} over it (give a RabbitMQ or Redis URL, or try bus-tasks demo)\n"
    )


def test_demo_given_a_broker_after_its_name_says_it_runs_on_memory_not_unrecognized(tmp_path: Path) -> None:
    done = run_cli("demo", "--broker", "memory://", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert (
        done.stderr.splitlines()[-1] == "bus-tasks demo: error: demo runs on memory:// and takes no --broker"
    )
    assert "unrecognized" not in done.stderr


def test_stomp_with_a_tls_file_that_is_missing_or_not_pem_names_the_file_and_exits_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for cert, key, said in (
        ("/nonexistent.pem", str(junk), "TLS certificate /nonexistent.pem cannot be read: No such file or directory"),
        (str(junk), "/nonexistent.key", "TLS private key /nonexistent.key cannot be read: No such file or directory"),
        (str(junk), str(junk), f"TLS certificate {junk} and private key {junk} are not a PEM certificate"),
    ):  # fmt: skip
        done = run_cli(
            "stomp", "--broker", "amqp://guest:guest@127.0.0.1:1//", "--tls-cert", cert, "--tls-key", key,
            "--log-level", "ERROR", cwd=tmp_path, timeout_s=30,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"bus-tasks stomp: bad configuration: {said}"), line


# -- Ctrl-C ---------------------------------------------------------------------------------

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1//"


@pytest.mark.parametrize("module", ["pydantic_core._pydantic_core", "kombu.exceptions"])
def test_ctrl_c_while_bus_tasks_loads_its_modules_exits_130_without_a_traceback(
    tmp_path: Path, module: str
) -> None:
    # Python reports each import as it finishes (-X importtime): the interrupt lands among them.
    env = cli_env(PYTHONPROFILEIMPORTTIME="1")
    process = BusTasksProcess("tasks", "--broker", UNREACHABLE, cwd=tmp_path, env=env)
    try:
        process.wait_for_line(f" {module}", timeout_s=30)
        process.popen.send_signal(signal.SIGINT)
        status = process.popen.wait(30)
    finally:
        process.kill()
    assert status == 130, process.log[-3000:]
    assert "Traceback" not in process.log


def test_ctrl_c_on_serve_while_it_waits_for_its_broker_stops_it_without_a_traceback(tmp_path: Path) -> None:
    with contextlib.ExitStack() as cleanup:
        serve = _serve(cleanup, "--broker", UNREACHABLE, "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
        serve.wait_for_line("unreachable", timeout_s=30)  # its own SIGINT handler is in place
        serve.popen.send_signal(signal.SIGINT)
        status = serve.popen.wait(30)
        serve.kill()
    assert status == 0, serve.log
    assert "Traceback" not in serve.log


# -- errors: one JSON object with --json, local trouble in its own words --------------------


def test_with_json_an_unreachable_broker_leaves_only_the_json_error_on_stderr(tmp_path: Path) -> None:
    done = run_cli("tasks", "--json", "--broker", UNREACHABLE, cwd=tmp_path, timeout_s=60)
    assert (done.returncode, done.stdout) == (1, "")
    (line,) = done.stderr.splitlines()  # no WARNING lines of the retries before it
    assert json.loads(line) == {
        "error": {
            "code": 100,
            "message": "General Exception: broker amqp://guest:***@127.0.0.1:1// unreachable:"
            " [Errno 111] Connection refused",
        }
    }


def test_json_with_an_explicit_log_level_still_logs(tmp_path: Path) -> None:
    done = run_cli(
        "tasks", "--json", "--log-level", "WARNING", "--broker", UNREACHABLE, cwd=tmp_path, timeout_s=60
    )
    assert done.returncode == 1
    *logged, last = done.stderr.splitlines()
    assert any(" WARNING bus_tasks.transport: " in line for line in logged), done.stderr
    assert json.loads(last)["error"]["code"] == 100


def test_a_local_failure_is_told_in_its_own_words_not_as_vdsms_general_exception(tmp_path: Path) -> None:
    done = run_cli("status", "--broker", UNREACHABLE, "00000000-0000-4000-8000-000000000000", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines()[-1] == (
        "bus-tasks status: broker amqp://guest:***@127.0.0.1:1// unreachable: [Errno 111] Connection refused"
    )


# -- tasks --watch across a restart of its only aggregator -----------------------------------


@pytest.mark.integration
def test_tasks_watch_waits_through_a_restart_of_its_only_aggregator_and_lists_again(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    serve_args = ("--broker", url, "--data-dir", str(tmp_path / "data"))
    out = tmp_path / "watch.out"
    out.touch()  # read before the shell's redirection may have made it
    with contextlib.ExitStack() as cleanup:
        first = _serve(cleanup, *serve_args, cwd=tmp_path)
        first.wait_for_line(READY, timeout_s=30)
        # Piped into a file, as `bus-tasks tasks --watch > file` would be.
        watcher = Process(
            ["bash", "-c", 'exec "$@" > "$OUT"', "bash", str(BUS_TASKS), "tasks", "--watch", "--broker", url],
            cwd=tmp_path,
            env=cli_env(OUT=str(out)),
        )
        cleanup.callback(watcher.kill)
        wait_until(lambda: " listing 0 tasks" in out.read_text(), timeout_s=30, what="the first listing")
        assert first.terminate(timeout_s=20) == 0, first.log
        watcher.wait_for_line("waiting for an aggregator", timeout_s=30)
        second = _serve(cleanup, *serve_args, cwd=tmp_path)
        second.wait_for_line(READY, timeout_s=30)
        publisher = TaskPublisher(rabbitmq_broker.connection(), "vdsm")
        cleanup.callback(publisher.close)
        task = publisher.create("copyImage", ["spm"], state=State.RUNNING)
        publisher.flush()
        wait_until(lambda: f"changed {task.id} " in out.read_text(), timeout_s=30, what="the new task's line")
        assert watcher.popen.poll() is None, watcher.log  # still watching
        assert out.read_text().count(" listing 0 tasks") == 2, out.read_text()  # listed again
        watcher.popen.send_signal(signal.SIGINT)
        assert watcher.popen.wait(20) == 130, watcher.log
        assert "Traceback" not in watcher.log


@pytest.mark.integration
def test_two_serves_with_the_default_name_each_warn_that_they_are_listed_alike(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as cleanup:
        one, two = (
            _serve(cleanup, "--broker", rabbitmq_broker.url, "--data-dir", str(tmp_path / d), cwd=tmp_path)
            for d in ("one", "two")
        )
        for serve in (one, two):
            serve.wait_for_line(READY, timeout_s=30)
        hostname = socket.gethostname()
        for serve in (one, two):
            warned = serve.lines[serve.wait_for_line("another aggregator serves as", timeout_s=30)]
            assert (
                f" WARNING bus_tasks.aggregator.presence: another aggregator serves as '{hostname}'" in warned
            )
            assert "give each its own aggregator_name" in warned
        for serve in (one, two):
            assert serve.terminate(timeout_s=20) == 0, serve.log
            assert sum("another aggregator serves as" in line for line in serve.lines) == 1, serve.log


# -- polish ---------------------------------------------------------------------------------


def test_serve_says_what_it_handled_when_it_stops_in_words_not_a_python_dict(tmp_path: Path) -> None:
    with contextlib.ExitStack() as cleanup:
        serve = _serve(cleanup, "--broker", "memory://", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
        serve.wait_for_line(READY, timeout_s=30)
        assert serve.terminate(timeout_s=20) == 0, serve.log
    said = serve.lines[serve.wait_for_line(STOPPED, timeout_s=1)]
    tail = said.split(f"{STOPPED}: ", 1)[1]
    # e.g. "requests 1" or "events 3, requests 2": what it did, in words and numbers
    assert re.fullmatch(r"nothing was received|[a-z_]+ \d+(, [a-z_]+ \d+)*", tail), said


def _get(url: str) -> tuple[int, str, bytes]:
    """Status, Content-Type and body of one GET (an error status is an answer here, not raised)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=20) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def test_http_unknown_paths_answer_the_json_error_and_a_callers_404_is_no_warning(tmp_path: Path) -> None:
    with contextlib.ExitStack() as cleanup:
        serve = _serve(
            cleanup, "--broker", "memory://", "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0",
            cwd=tmp_path,
        )  # fmt: skip
        line = serve.lines[serve.wait_for_line("http serving on http://", timeout_s=30)]
        base = line.rsplit(" ", 1)[1]
        serve.wait_for_line(READY, timeout_s=30)
        status, kind, body = _get(f"{base}/no/such/path")
        assert (status, kind) == (404, "application/json")
        assert json.loads(body) == {"code": 100, "message": "General Exception: Not Found: GET /no/such/path"}
        unknown = "00000000-0000-4000-8000-000000000000"
        status, kind, body = _get(f"{base}/api/tasks/{unknown}")
        assert (status, json.loads(body)["code"]) == (404, 401)
        assert serve.terminate(timeout_s=20) == 0, serve.log
    assert not [line for line in serve.lines if " WARNING " in line and "http GET" in line], serve.log


@pytest.mark.integration
def test_tasks_on_a_120_column_terminal_keeps_the_verb_whole_and_cuts_the_message(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    system = start_system(rabbitmq_broker)
    publisher = system.publisher("gluster")
    task = publisher.create(
        "downloadImage", ["gluster", "volume:gv-backups-01"], state="running", message="copying " * 40
    )
    publisher.flush(10.0)
    client = system.client()
    wait_until(lambda: task.id in client.get_all_tasks(), timeout_s=30, what="the task listed")
    shown = run_cli_on_terminal("tasks", "--broker", rabbitmq_broker.url, cwd=tmp_path, columns=120)
    assert (shown.returncode, shown.stderr) == (0, "")
    _, row, _ = shown.stdout.splitlines()
    assert len(row) <= 120
    assert row.startswith(f"{task.id}  gluster    downloadImage  "), row
    assert row.endswith("\N{HORIZONTAL ELLIPSIS}")


def test_metrics_of_serve_carry_no_created_series(tmp_path: Path) -> None:
    with contextlib.ExitStack() as cleanup:
        serve = _serve(
            cleanup, "--broker", "memory://", "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0",
            cwd=tmp_path,
        )  # fmt: skip
        base = serve.lines[serve.wait_for_line("http serving on http://", timeout_s=30)].rsplit(" ", 1)[1]
        serve.wait_for_line(READY, timeout_s=30)
        status, _, body = _get(f"{base}/metrics")
        assert serve.terminate(timeout_s=20) == 0, serve.log
    text = body.decode()
    assert status == 200
    assert "bus_tasks_rpc_requests_total" in text  # the counters are there, only their twins are not
    assert [line for line in text.splitlines() if "_created" in line] == []


def test_simulate_takes_interval_s_as_gluster_does_and_its_old_interval_still(tmp_path: Path) -> None:
    for flag in ("--interval-s", "--interval"):
        done = run_cli("simulate", "storage", flag, "-1", cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.splitlines()[-1].endswith(
            "argument --interval-s/--interval: must be a number of seconds more than 0, not '-1'"
        )
    gluster = run_cli("gluster", "--help", cwd=tmp_path, env=cli_env(COLUMNS="200"))
    simulate = run_cli("simulate", "--help", cwd=tmp_path, env=cli_env(COLUMNS="200"))
    assert "--interval-s S" in gluster.stdout
    assert "--interval-s S, --interval S" in simulate.stdout
