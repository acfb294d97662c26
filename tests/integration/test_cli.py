"""The ``bus-tasks`` console script: help, clear errors on bad input, and its commands end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.brokers import Broker, SystemFactory
from support.cli_helpers import BusTasksProcess, cli_env, details, parse_table, run_cli, without_times

from bus_tasks.config import DEFAULT_CONFIG_FILE
from bus_tasks.testing import wait_until
from workers.cli import build_parser, summaries

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
SCHEMES = "amqp://, amqps://, pyamqp://, redis://, rediss://, memory://"
SUBCOMMANDS = summaries(build_parser())
# Where a bad setting may come from, when it is not named by BUS_TASKS_CONFIG: the shipped file is
# found from any working directory.
FROM_SHIPPED = f"(from config file {DEFAULT_CONFIG_FILE}, BUS_TASKS_* env vars or options)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- help ---------------------------------------------------------------------------------


def test_help_describes_the_tool_and_lists_every_subcommand_with_its_summary(tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    text = _one_line(done.stdout)
    assert text.startswith("usage: bus-tasks ")
    assert "Task-status service for message-bus driven systems" in text
    for name, summary in SUBCOMMANDS.items():
        assert f"{name} {summary}" in text


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_help_of_each_subcommand_exits_zero_and_says_what_it_does(command: str, tmp_path: Path) -> None:
    done = run_cli(command, "--help", cwd=tmp_path)
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
        f"bus-tasks: bad configuration: broker_url: {message} {FROM_SHIPPED}\n",
    )


def test_misspelled_key_in_the_config_file_is_named_and_its_value_not_shown(tmp_path: Path) -> None:
    config = tmp_path / "bus_tasks.toml"
    config.write_text('broker_ulr = "amqp://guest:s3cret@127.0.0.1:5672//"\nrpc_timeout_s = 5.0\n')
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_CONFIG=str(config)))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "bus-tasks: bad configuration: broker_ulr: Extra inputs are not permitted "
        f"(from config file {config}, BUS_TASKS_* env vars or options)\n"
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
        "bus-tasks: bad configuration: unknown setting in the environment: BUS_TASKS_BROKR_URL\n",
    )


def test_setting_of_the_wrong_type_in_the_environment_is_named(tmp_path: Path) -> None:
    done = run_cli("tasks", cwd=tmp_path, env=cli_env(BUS_TASKS_RPC_TIMEOUT_S="soon"))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "bus-tasks: bad configuration: rpc_timeout_s: Input should be a valid number, unable to parse "
        f"string as a number {FROM_SHIPPED}\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--log-level", "loud", "demo"],
            "argument --log-level: 'loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ),
        (["inject", "--count", "0"], "argument --count: must be at least 1, not 0"),
        (["tasks", "--timeout", "-1"], "argument --timeout: must be more than 0, not -1"),
        (["simulate", "storage", "--interval", "0"], "argument --interval: must be more than 0, not 0"),
        (
            ["tasks", "--legacy", "info", "--tag", "spm"],
            "tasks: --legacy lists spm tasks only; it takes no --tag or --match",
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
        "bus-tasks tasks: error 100: General Exception: "
        "broker amqp://guest:***@127.0.0.1:1// unreachable: [Errno 111] Connection refused"
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
def test_injected_tasks_are_listed_by_tag_and_move_to_their_new_tags_when_retagged(
    rabbitmq_broker: Broker, start_system: SystemFactory, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    client = start_system(rabbitmq_broker).client()

    injected = run_cli(
        "inject", "--broker", url, "--subsystem", "vdsm", "--verb", "copyImage", "--tag", "T", "--count", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert (injected.returncode, injected.stderr) == (0, "")
    moved, kept = ids = injected.stdout.split()
    wait_until(lambda: set(client.get_all_tasks("T")) == set(ids), timeout_s=10, what="injected tasks listed")

    listed = run_cli("tasks", "--broker", url, "--tag", "T", "--json", cwd=tmp_path)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert without_times(json.loads(listed.stdout)) == {
        task_id: details(task_id, subsystem="vdsm", verb="copyImage", tags=["T"]) for task_id in ids
    }

    retagged = run_cli("retag", "--broker", url, moved, "--tag", "U", "--tag", "spm", cwd=tmp_path)
    assert (retagged.returncode, retagged.stdout, retagged.stderr) == (0, f"{moved}: tags ['U', 'spm']\n", "")
    wait_until(lambda: set(client.get_all_tasks("U")) == {moved}, timeout_s=10, what="retagged task listed")

    listed = run_cli("tasks", "--broker", url, "--tag", "T", "--json", cwd=tmp_path)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert without_times(json.loads(listed.stdout)) == {
        kept: details(kept, subsystem="vdsm", verb="copyImage", tags=["T"])
    }

    table = run_cli("tasks", "--broker", url, cwd=tmp_path)
    assert (table.returncode, table.stderr) == (0, "")
    rows, count = parse_table(table.stdout)
    assert count == 2
    assert {row["TASK ID"]: row for row in rows} == {
        task_id: {
            "TASK ID": task_id,
            "SUBSYSTEM": "vdsm",
            "VERB": "copyImage",
            "TAGS": tags,
            "STATE": "running",
            "ENGINE STATE": "running",
            "PROGRESS": "-",
            "CODE": "0",
            "MESSAGE": "-",
        }
        for task_id, tags in ((moved, "U,spm"), (kept, "T"))
    }

    legacy = run_cli("tasks", "--broker", url, "--legacy", "info", "--json", cwd=tmp_path)
    assert (legacy.returncode, legacy.stderr) == (0, "")
    assert json.loads(legacy.stdout) == {moved: {"id": moved, "verb": "copyImage"}}


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
