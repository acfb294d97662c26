"""The ``bus-tasks`` console script: help, clear errors on bad input, and its commands end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from support.brokers import Broker, System, SystemFactory
from support.cli_helpers import (
    BusTasksProcess,
    cli_env,
    details,
    parse_table,
    run_cli,
    run_cli_into_head,
    run_cli_on_terminal,
    without_times,
)

from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.testing import wait_until
from bus_tasks.workers import render
from bus_tasks.workers.cli import build_parser, summaries

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
SCHEMES = "amqp://, amqps://, pyamqp://, redis://, rediss://, memory://"
SUBCOMMANDS = summaries(build_parser())
# Where a bad setting came from is named: the option, the variable or the file.
FROM_OPTION = "(from the command line)"
FROM_TIMEOUT_VARIABLE = "(from environment variable BUS_TASKS_RPC_TIMEOUT_S)"


# argparse wraps help to $COLUMNS, breaking words at hyphens ("vdsm-client"): no wrapping here.
WIDE = cli_env(COLUMNS="1000")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- help ---------------------------------------------------------------------------------


def test_help_describes_the_tool_and_lists_every_subcommand_with_its_summary(tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path, env=WIDE)
    assert (done.returncode, done.stderr) == (0, "")
    text = _one_line(done.stdout)
    assert text.startswith("usage: bus-tasks ")
    assert "Task-status service for message-bus driven systems" in text
    for name, summary in SUBCOMMANDS.items():
        assert f"{name} {summary}" in text


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_help_of_each_subcommand_exits_zero_and_says_what_it_does(command: str, tmp_path: Path) -> None:
    done = run_cli(command, "--help", cwd=tmp_path, env=WIDE)
    assert (done.returncode, done.stderr) == (0, "")
    text = _one_line(done.stdout)
    assert text.startswith(f"usage: bus-tasks {command} ")
    assert SUBCOMMANDS[command] in text


# -- bad input ----------------------------------------------------------------------------


def test_unknown_subcommand_is_refused_with_usage_and_exit_status_2(tmp_path: Path) -> None:
    done = run_cli("frobnicate", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("usage: bus-tasks ")
    assert "bus-tasks: error: argument COMMAND: invalid choice: 'frobnicate'" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["tasks", "--broker", "foo://broker.example:1234/"],
            f"broker URL scheme 'foo' is not supported: use one of {SCHEMES}",
        ),
        (
            ["status", "--broker", "broker.example", UNKNOWN_ID],
            f"broker URL has no scheme: use one of {SCHEMES}",
        ),
        (
            ["tasks", "--broker", "amqp://guest:s3cret/"],
            "broker URL is malformed: its user:password@host:port part does not parse",
        ),
    ],
    ids=["unknown-scheme", "no-scheme", "no-host"],
)
def test_unusable_broker_url_is_refused_in_one_line_without_echoing_it(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = run_cli(*args, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"bus-tasks: bad configuration: broker_url: {message} {FROM_OPTION}\n",
    )


def test_misspelled_key_in_the_config_file_is_named_and_its_value_not_shown(tmp_path: Path) -> None:
    config = tmp_path / "bus_tasks.toml"
    config.write_text('broker_ulr = "amqp://guest:s3cret@127.0.0.1:5672//"\nrpc_timeout_s = 5.0\n')
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_CONFIG=str(config)))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"bus-tasks: bad configuration: broker_ulr: unknown setting in config file {config}"
        " (did you mean broker_url?)\n"
    )


def test_config_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_CONFIG=str(missing)))
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"bus-tasks: bad configuration: BUS_TASKS_CONFIG names {str(missing)!r}, which is not a file\n",
    )


def test_misspelled_setting_in_the_environment_is_refused(tmp_path: Path) -> None:
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_BROKR_URL="amqp://guest:guest@h//"))
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "bus-tasks: bad configuration: unknown setting in the environment: BUS_TASKS_BROKR_URL"
        " (did you mean BUS_TASKS_BROKER_URL?)\n",
    )


def test_setting_of_the_wrong_type_in_the_environment_is_named(tmp_path: Path) -> None:
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_RPC_TIMEOUT_S="soon"))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "bus-tasks: bad configuration: rpc_timeout_s: Input should be a valid number, unable to parse "
        f"string as a number {FROM_TIMEOUT_VARIABLE}\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--log-level", "loud", "demo"],
            "argument --log-level: 'loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ),
        (["inject", "--count", "0"], "argument --count: must be a whole number, at least 1, not '0'"),
        (["tasks", "--timeout", "x"], "argument --timeout: must be a number of seconds more than 0, not 'x'"),
        (
            ["simulate", "storage", "--interval", "0"],
            "argument --interval-s/--interval: must be a number of seconds more than 0, not '0'",
        ),
        (
            ["tasks", "--legacy", "info", "--tag", "spm"],
            "--legacy lists spm tasks only; it takes no --tag or --match",
        ),
    ],
    ids=["log-level", "count", "timeout", "interval", "legacy-with-tag"],
)
def test_bad_option_value_is_refused_with_usage_and_exit_status_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = run_cli(*args, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("usage: bus-tasks")
    assert done.stderr.endswith(f": error: {message}\n")


def test_unreachable_broker_fails_in_one_line_instead_of_retrying_forever(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    done = run_cli("tasks", "--broker", "amqp://guest:s3cret@127.0.0.1:1//", cwd=tmp_path, timeout_s=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines()[-1] == (
        "bus-tasks tasks: broker amqp://guest:***@127.0.0.1:1// unreachable: [Errno 111] Connection refused"
    )
    assert "s3cret" not in done.stderr
    assert "Traceback" not in done.stderr


# -- against a running aggregator ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("task_id", "error"),
    [
        ("not-a-uuid", "error 1000: Invalid parameter: ('taskID', 'not-a-uuid')"),
        (UNKNOWN_ID, f"error 401: Task id unknown: ('{UNKNOWN_ID}',)"),
    ],
    ids=["not-a-uuid", "unknown"],
)
def test_status_of_a_bad_task_id_prints_the_aggregators_error_and_exits_1(
    task_id: str, error: str, rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    done = run_cli("status", "--broker", rabbitmq_broker.url, task_id, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"bus-tasks status: {error}\n")


@pytest.mark.integration
def test_injected_test_tasks_are_listed_by_tag_and_their_retag_through_the_aggregator_sticks(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    client = start_system(rabbitmq_broker).client()

    injected = run_cli(
        "inject", "--broker", url, "--verb", "copyImage", "--tag", "T", "--count", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert (injected.returncode, injected.stderr) == (0, "")
    moved, kept = ids = injected.stdout.split()
    wait_until(lambda: set(client.get_all_tasks("T")) == set(ids), timeout_s=10, what="injected tasks listed")

    listed = run_cli("tasks", "--broker", url, "--tag", "T", "--json", cwd=tmp_path)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert without_times(json.loads(listed.stdout)) == {
        task_id: details(task_id, subsystem="test", verb="copyImage", tags=["T"]) for task_id in ids
    }

    retagged = run_cli("retag", "--broker", url, moved, "--tag", "U", "--tag", "spm", cwd=tmp_path)
    assert (retagged.returncode, retagged.stdout, retagged.stderr) == (0, f"{moved}: tags U,spm\n", "")
    wait_until(lambda: set(client.get_all_tasks("U")) == {moved}, timeout_s=10, what="retagged task listed")
    stopped = run_cli("stop", "--broker", url, moved, cwd=tmp_path)  # answered by the owner too
    assert (stopped.returncode, stopped.stderr) == (0, "")
    wait_until(lambda: client.get_task_status(moved)["code"] == 411, timeout_s=10, what="stopped")
    assert client.get_task_details(moved)["tags"] == ["U", "spm"]  # the retag stuck
    stopped_status = client.get_task_status(moved)

    listed = run_cli("tasks", "--broker", url, "--tag", "T", "--json", cwd=tmp_path)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert without_times(json.loads(listed.stdout)) == {
        kept: details(kept, subsystem="test", verb="copyImage", tags=["T"])
    }

    table = run_cli("tasks", "--broker", url, cwd=tmp_path)
    assert (table.returncode, table.stderr) == (0, "")
    rows, count = parse_table(table.stdout)
    assert count == 2
    assert stopped_status["taskState"] == "finished"
    rows = [row for row in rows if row["TASK ID"] != moved]
    assert {row["TASK ID"]: row for row in rows} == {
        task_id: {
            "TASK ID": task_id,
            "SUBSYSTEM": "test",
            "VERB": "copyImage",
            "TAGS": tags,
            "STATE": "running",
            "ENGINE STATE": "running",
            "PROGRESS": "-",
            "CODE": "0",
            "MESSAGE": "-",
        }
        for task_id, tags in ((kept, "T"),)
    }

    legacy = run_cli("tasks", "--broker", url, "--legacy", "info", "--json", cwd=tmp_path)
    assert (legacy.returncode, legacy.stderr) == (0, "")
    assert json.loads(legacy.stdout) == {moved: {"id": moved, "verb": "copyImage"}}


@pytest.mark.integration
def test_retag_of_a_task_whose_owner_is_away_says_so_at_the_deadline_and_changes_nothing(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    client = start_system(rabbitmq_broker).client()
    injected = run_cli("inject", "--broker", url, "--subsystem", "vdsm", "--tag", "T", cwd=tmp_path)
    [task] = injected.stdout.split()
    wait_until(lambda: task in client.get_all_tasks("T"), timeout_s=10, what="injected task listed")

    retagged = run_cli("retag", "--broker", url, "--timeout", "2", task, "--tag", "U", cwd=tmp_path)

    assert retagged.returncode == 1
    assert "error 100: General Exception" in retagged.stderr
    assert "did not answer Task.retag in time" in retagged.stderr
    assert client.get_task_details(task)["tags"] == ["T"]


@pytest.mark.integration
def test_clear_force_removes_a_running_orphan_and_subsystems_lists_what_is_left(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    client = start_system(rabbitmq_broker).client()
    injected = run_cli("inject", "--broker", url, "--subsystem", "vdsm", "--count", "2", cwd=tmp_path)
    orphan, other = injected.stdout.split()
    wait_until(lambda: {orphan, other} <= set(client.get_all_tasks()), timeout_s=10, what="listed")

    refused = run_cli("clear", "--broker", url, orphan, cwd=tmp_path)
    forced = run_cli("clear", "--broker", url, orphan, "--force", cwd=tmp_path)

    assert refused.returncode == 1
    assert "error 410" in refused.stderr
    assert (forced.returncode, forced.stdout, forced.stderr) == (0, f"clear {orphan}: ok (forced)\n", "")
    assert set(client.get_all_tasks()) == {other}
    listed = run_cli("subsystems", "--broker", url, "--json", cwd=tmp_path)
    assert listed.returncode == 0
    subsystems = json.loads(listed.stdout)
    assert (subsystems["vdsm"]["tasks"], subsystems["vdsm"]["lastSeen"]) == (1, None)
    assert subsystems["test"]["state"] == "alive"
    table = run_cli("subsystems", "--broker", url, cwd=tmp_path)
    assert table.stdout.splitlines()[0].split() == [
        "SUBSYSTEM",
        "STATE",
        "TASKS",
        "LAST",
        "SEEN",
        "HOST",
        "PID",
        "INSTANCE",
    ]
    assert table.stdout.splitlines()[-1] == "(2 subsystems)"


@pytest.mark.integration
def test_retag_of_an_unknown_task_prints_401_and_publishes_nothing(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    client = start_system(rabbitmq_broker).client()
    done = run_cli("retag", "--broker", rabbitmq_broker.url, UNKNOWN_ID, "--tag", "x", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        f"bus-tasks retag: error 401: Task id unknown: ('{UNKNOWN_ID}',)\n",
    )
    assert client.get_all_tasks() == {}


@pytest.mark.integration
def test_status_shows_an_injected_task_and_clear_of_a_running_one_prints_410(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    client = start_system(rabbitmq_broker).client()
    injected = run_cli("inject", "--broker", url, "--subsystem", "vdsm", "--tag", "spm", cwd=tmp_path)
    assert (injected.returncode, injected.stderr) == (0, "")
    (task_id,) = injected.stdout.split()
    wait_until(lambda: task_id in client.get_all_tasks(), timeout_s=10, what="injected task listed")

    status = run_cli("status", "--broker", url, task_id.upper(), cwd=tmp_path)
    assert (status.returncode, status.stderr) == (0, "")
    assert parse_table(status.stdout) == (
        [
            {
                "TASK ID": task_id,
                "TASK STATE": "running",
                "TASK RESULT": "-",
                "CODE": "0",
                "MESSAGE": "-",
            }
        ],
        1,
    )

    cleared = run_cli("clear", "--broker", url, task_id, cwd=tmp_path)
    assert (cleared.returncode, cleared.stdout, cleared.stderr) == (
        1,
        "",
        f"bus-tasks clear: error 410: Operation is not allowed in this task state: ('{task_id}', 'running')\n",
    )


@pytest.fixture
def simulators() -> Iterator[list[BusTasksProcess]]:
    started: list[BusTasksProcess] = []
    yield started
    for process in started:
        process.kill()


# kind -> the subsystem it is, and the verbs of a round of two tasks
SIMULATED = {
    "storage": ("vdsm", {"createVolume", "copyImage"}),
    "gluster": ("gluster", {"rebalance"}),
}


@pytest.mark.integration
@pytest.mark.parametrize("kind", list(SIMULATED))
def test_simulate_runs_rounds_of_tasks_clears_old_rounds_and_stops_cleanly_on_sigterm(
    kind: str,
    rabbitmq_broker: Broker,
    start_system: SystemFactory,
    simulators: list[BusTasksProcess],
    tmp_path: Path,
) -> None:
    subsystem, verbs = SIMULATED[kind]
    client = start_system(rabbitmq_broker).client()
    simulator = BusTasksProcess(
        "simulate", kind, "--broker", rabbitmq_broker.url, "--tasks", "2", "--interval", "0.05",
        "--keep-rounds", "1",
        cwd=tmp_path,
    )  # fmt: skip
    simulators.append(simulator)

    def one_round() -> dict[str, dict[str, Any]] | None:
        tasks = client.get_all_tasks()
        return tasks if len(tasks) == 2 else None

    first_round = wait_until(one_round, timeout_s=20, what="a round of two tasks")
    assert {(t["subsystem"], t["verb"]) for t in first_round.values()} == {(subsystem, v) for v in verbs}
    # With one round kept, the simulator clears a round's done tasks when it starts the next.
    wait_until(
        lambda: (tasks := client.get_all_tasks()) and not set(tasks) & set(first_round),
        timeout_s=30,
        what="the first round cleared, a later one listed",
    )

    assert simulator.terminate(timeout_s=20) == 0
    simulator.wait_for_line(f"simulator {subsystem} stopped", timeout_s=1)


# -- a good Unix tool ---------------------------------------------------------------------

REFUSED_BROKER = "amqp://guest:s3cret@127.0.0.1:1//"  # nothing listens on port 1: refused at once


def test_version_prints_the_name_and_the_installed_package_version(tmp_path: Path) -> None:
    done = run_cli("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"bus-tasks {version('bus_tasks')}\n", "")


def test_json_error_of_an_unreachable_broker_is_one_json_object_on_stderr_and_exit_1(tmp_path: Path) -> None:
    done = run_cli("tasks", "--json", "--broker", REFUSED_BROKER, cwd=tmp_path, timeout_s=60)
    assert (done.returncode, done.stdout) == (1, "")
    error = json.loads(done.stderr.splitlines()[-1])["error"]
    assert error["code"] == 100
    assert "127.0.0.1:1" in error["message"]
    assert "s3cret" not in done.stderr


def test_json_error_of_a_bad_configuration_is_json_on_stderr_and_exit_2(tmp_path: Path) -> None:
    done = run_cli("status", "--json", UNKNOWN_ID, cwd=tmp_path, env=cli_env(BUS_TASKS_RPC_TIMEOUT_S="soon"))
    assert (done.returncode, done.stdout) == (2, "")
    assert json.loads(done.stderr) == {
        "error": {
            "code": 1000,
            "message": "bad configuration: rpc_timeout_s: Input should be a valid number, unable to parse "
            f"string as a number {FROM_TIMEOUT_VARIABLE}",
        }
    }


def _publish(system: System, count: int, **fields: Any) -> list[str]:
    """``count`` running tasks of subsystem vdsm with ``fields``; their ids, once all are listed."""
    publisher = system.publisher("vdsm")
    ids = [publisher.create("copyImage", ["spm"], state="running", **fields).id for _ in range(count)]
    publisher.flush(10.0)
    client = system.client()
    wait_until(lambda: set(ids) <= set(client.get_all_tasks()), timeout_s=30, what=f"{count} tasks listed")
    return ids


@pytest.mark.integration
def test_tasks_piped_into_head_stops_quietly_with_the_status_of_a_closed_pipe(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    # Far more than a pipe holds (64 KiB): bus-tasks is still writing when head has gone.
    _publish(start_system(rabbitmq_broker), 800, message="x" * 200)
    done = run_cli_into_head("tasks", "--broker", rabbitmq_broker.url, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (141, "")
    assert done.stdout.split() == " ".join(render.TASK_HEADERS).split()  # head printed the header


# A subsystem's message that would clear the screen and paint red, on two lines.
HOSTILE_MESSAGE = "\x1b[2J\x1b[31mdisk failed\x1b[0m\r\nretrying"
HOSTILE_SHOWN = "\\x1b[2J\\x1b[31mdisk failed\\x1b[0m\\r\\nretrying"


@pytest.mark.integration
def test_a_message_with_ansi_escapes_and_a_line_break_is_listed_escaped_on_one_line(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    (task_id,) = _publish(start_system(rabbitmq_broker), 1, message=HOSTILE_MESSAGE)
    table = run_cli("tasks", "--broker", rabbitmq_broker.url, cwd=tmp_path)
    assert (table.returncode, table.stderr) == (0, "")
    assert len(table.stdout.splitlines()) == 3  # header, the task, "(1 task)"
    assert not set(table.stdout) & {"\x1b", "\r"}
    rows, count = parse_table(table.stdout)
    assert count == 1
    assert (rows[0]["TASK ID"], rows[0]["MESSAGE"]) == (task_id, HOSTILE_SHOWN)

    listed = run_cli("tasks", "--broker", rabbitmq_broker.url, "--json", cwd=tmp_path)
    assert "\x1b" not in listed.stdout
    assert json.loads(listed.stdout)[task_id]["message"] == HOSTILE_MESSAGE


@pytest.mark.integration
def test_on_a_terminal_lines_are_cut_to_its_width_and_json_is_indented(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    (task_id,) = _publish(start_system(rabbitmq_broker), 1, message=HOSTILE_MESSAGE + "m" * 300)
    url = rabbitmq_broker.url

    table = run_cli_on_terminal("tasks", "--broker", url, cwd=tmp_path, columns=120)
    assert (table.returncode, table.stderr) == (0, "")
    header, row, footer = table.stdout.splitlines()
    assert header.split() == " ".join(render.TASK_HEADERS).split()
    # Ids, states and codes stay whole; the message is cut to the 15 columns left of the 120.
    assert row == f"{task_id}  vdsm       copyImage  spm   running  running       -         0     " + (
        "\\x1b[2J\\x1b[31\N{HORIZONTAL ELLIPSIS}"
    )
    assert len(row) == 120
    assert footer == "(1 task)"

    called = run_cli_on_terminal(
        "call", "--broker", url, "Task.getStatus", f"taskID={task_id}", cwd=tmp_path, columns=100
    )
    assert (called.returncode, called.stderr) == (0, "")
    assert called.stdout.splitlines()[:2] == ["{", f'  "taskID": "{task_id}",']


@pytest.mark.integration
def test_info_shows_the_whole_record_of_one_task_aligned_with_data_as_indented_json(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    data = {"image": "img-1", "sizes": [1, 2]}
    (task_id,) = _publish(start_system(rabbitmq_broker), 1, message="copying", progress=40, data=data)

    as_json = run_cli("info", "--broker", rabbitmq_broker.url, "--json", task_id, cwd=tmp_path)
    assert (as_json.returncode, as_json.stderr) == (0, "")
    record = json.loads(as_json.stdout)
    assert without_times({task_id: record}) == {
        task_id: {
            **details(task_id, subsystem="vdsm", verb="copyImage", tags=["spm"]),
            "message": "copying",
            "progress": 40,
            "data": data,
        }
    }

    shown = run_cli("info", "--broker", rabbitmq_broker.url, task_id, cwd=tmp_path)
    assert (shown.returncode, shown.stderr) == (0, "")
    assert shown.stdout == "\n".join(
        [
            # One of each: no taskID/tag copies; the engine's state beside the internal one.
            f"id:        {task_id}",
            "verb:      copyImage",
            "subsystem: vdsm",
            "tags:      spm",
            "state:     running (engine: running)",
            "code:      0",
            "message:   copying",
            "result:    -",
            "progress:  40",
            "data:      {",
            '             "image": "img-1",',
            '             "sizes": [',
            "               1,",
            "               2",
            "             ]",
            "           }",
            f"createdAt: {record['createdAt']}",
            f"updatedAt: {record['updatedAt']}",
            "",
        ]
    )


@pytest.mark.integration
def test_info_of_an_unknown_task_prints_401_and_exits_1(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    done = run_cli("info", "--broker", rabbitmq_broker.url, UNKNOWN_ID, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        f"bus-tasks info: error 401: Task id unknown: ('{UNKNOWN_ID}',)\n",
    )


@pytest.mark.integration
def test_call_sends_the_method_with_its_key_value_params_and_prints_the_result_as_json(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    system = start_system(rabbitmq_broker)
    (spm_task,) = _publish(system, 1, message="copying")
    other = system.publisher("gluster")
    gluster_task = other.create("rebalance", ["gluster", "volume:gv1"], state="running").id
    other.flush(10.0)
    wait_until(
        lambda: gluster_task in system.client().get_all_tasks(), timeout_s=10, what="gluster task listed"
    )
    url = rabbitmq_broker.url

    status = run_cli("call", "--broker", url, "Task.getStatus", f"taskID={spm_task}", cwd=tmp_path)
    assert (status.returncode, status.stderr) == (0, "")
    assert json.loads(status.stdout) == {
        "taskID": spm_task,
        "taskState": "running",
        "taskResult": "",
        "code": 0,
        "message": "copying",
    }

    options = tmp_path / "options.json"
    options.write_text('{"match": "all"}')
    for params in (["tags=gluster"], ['tags=["volume:gv1", "gluster"]', f"options=@{options}"]):
        listed = run_cli("call", "--broker", url, "Host.getAllTasks", *params, cwd=tmp_path)
        assert (listed.returncode, listed.stderr) == (0, ""), params
        assert list(json.loads(listed.stdout)) == [gluster_task], params

    info = run_cli("call", "--broker", url, "Host.getAllTasksInfo", cwd=tmp_path)
    assert (info.returncode, info.stderr) == (0, "")
    assert json.loads(info.stdout) == {spm_task: {"id": spm_task, "verb": "copyImage"}}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["Task.getStatus", f"taskID={UNKNOWN_ID}"], f"error 401: Task id unknown: ('{UNKNOWN_ID}',)"),
        (["Host.frobnicate"], "error -32601: Method not found: 'Host.frobnicate'"),
    ],
    ids=["unknown-task", "unknown-method"],
)
def test_call_answered_with_a_json_rpc_error_prints_code_and_message_and_exits_1(
    args: list[str], error: str, rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    done = run_cli("call", "--broker", rabbitmq_broker.url, *args, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"bus-tasks call: {error}\n")


@pytest.mark.integration
def test_with_json_the_aggregators_error_is_a_json_object_on_stderr_and_the_status_stays_1(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    done = run_cli("status", "--broker", rabbitmq_broker.url, "--json", UNKNOWN_ID, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert json.loads(done.stderr) == {
        "error": {"code": 401, "message": f"Task id unknown: ('{UNKNOWN_ID}',)"}
    }


@pytest.mark.integration
def test_log_level_given_after_the_command_sets_the_log_level(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    quiet = run_cli("tasks", "--broker", rabbitmq_broker.url, "--log-level", "ERROR", cwd=tmp_path)
    loud = run_cli("tasks", "--broker", rabbitmq_broker.url, "--log-level", "DEBUG", cwd=tmp_path)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert loud.returncode == 0
    assert " DEBUG " in loud.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "store",
    ['store = "mongo"', 'store = "redis"', "data_dir = 5"],
    ids=["unknown-store", "redis-without-url", "data-dir-not-a-path"],
)
def test_client_commands_work_with_store_settings_no_aggregator_could_use(
    store: str, rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    start_system(rabbitmq_broker)
    config = tmp_path / "bus_tasks.toml"
    config.write_text(f"{store}\n")
    env = cli_env(BUS_TASKS_CONFIG=str(config))
    done = run_cli("tasks", "--broker", rabbitmq_broker.url, cwd=tmp_path, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (0, render.tasks_table({}) + "\n", "")


@pytest.mark.integration
def test_tasks_lists_every_task_of_a_view_over_max_reply_bytes_and_legacy_listings_say_too_large(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    system = start_system(rabbitmq_broker, policy=AggregatorPolicy(max_reply_bytes=16_384))
    ids = _publish(system, 150)  # some 60 KB of listing: five replies' worth
    done = run_cli("tasks", "--json", "--broker", rabbitmq_broker.url, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert set(json.loads(done.stdout)) == set(ids)
    done = run_cli("tasks", "--legacy", "statuses", "--broker", rabbitmq_broker.url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("bus-tasks tasks: error -32012: Reply too large: 150 tasks (")
    assert done.stderr.rstrip().endswith("bytes); page it with options.limit")
