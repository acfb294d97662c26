"""The ``bus-tasks`` command line as argparse sees it: version, global options, help, bad values."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from bus_tasks.plugins import installed
from bus_tasks.workers.cli import build_parser, main, summaries
from bus_tasks.workers.options import command_named

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
TAG_RULE = "a tag matches [A-Za-z0-9_.:/-]{1,64}; repeat --tag for each tag"


@pytest.fixture(autouse=True)
def wide_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """Help on one line per option: argparse wraps to $COLUMNS, and breaks words at hyphens."""
    monkeypatch.setenv("COLUMNS", "1000")


def parse(*args: str) -> argparse.Namespace:
    return build_parser().parse_args(args)


def refusal(*args: str) -> str:
    """argparse's complaint (the last line of stderr) about ``bus-tasks ARGS``, after checking it
    exits with the usage status 2."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        build_parser().parse_args(args)
    assert exited.value.code == 2
    return stderr.getvalue().splitlines()[-1]


def help_of(command: str) -> str:
    """The ``--help`` of ``command``, on one line (argparse wraps it to the terminal's width)."""
    return " ".join(_subparsers(build_parser())[command].format_help().split())


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# -- --version ----------------------------------------------------------------------------


def test_version_prints_the_installed_package_version_and_exits_zero() -> None:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert stdout.getvalue() == f"bus-tasks {version('bus_tasks')}\n"


# -- global options before or after the command -------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--log-level", "debug", "tasks"],
        ["tasks", "--log-level", "debug"],
        ["--log-level", "info", "tasks", "--log-level", "DEBUG"],
    ],
    ids=["before", "after", "after-wins"],
)
def test_log_level_is_accepted_before_or_after_the_command(args: list[str]) -> None:
    assert parse(*args).log_level == "DEBUG"


@pytest.mark.parametrize(
    "args",
    [["--broker", "memory://", "status", UNKNOWN_ID], ["status", UNKNOWN_ID, "--broker", "memory://"]],
    ids=["before", "after"],
)
def test_broker_is_accepted_before_or_after_the_command(args: list[str]) -> None:
    assert parse(*args).broker == "memory://"


def test_a_global_option_given_before_the_command_is_not_undone_by_the_command() -> None:
    args = parse("--log-level", "error", "--broker", "memory://", "inject", "--count", "2")
    assert (args.log_level, args.broker, args.count) == ("ERROR", "memory://", 2)


def test_global_options_not_given_are_left_to_the_settings() -> None:
    args = parse("tasks")
    assert "log_level" not in args
    assert "broker" not in args


@pytest.mark.parametrize("command", [c for c in summaries(build_parser()) if c != "demo"])
def test_every_command_but_demo_takes_both_global_options(command: str) -> None:
    text = help_of(command)
    assert "--log-level LEVEL" in text
    assert "--broker URL" in text


def test_demo_takes_log_level_and_refuses_a_broker_given_before_it() -> None:
    assert parse("demo", "--log-level", "info").log_level == "INFO"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main(["--broker", "memory://", "demo"])
    assert exited.value.code == 2
    assert stderr.getvalue().splitlines()[-1] == (
        "bus-tasks demo: error: demo runs on memory:// and takes no --broker"
    )


# -- defaults in --help -------------------------------------------------------------------


# Options whose default is a setting (the option overrides it), by argparse dest.
SETTING_OPTIONS = {
    "log_level": "log_level",
    "broker": "broker_url",
    "timeout": "rpc_timeout_s",
    "data_dir": "data_dir",
    "connect_timeout": "stomp_connect_timeout_s",
    "max_connections": "stomp_max_connections",
    "max_pending": "stomp_max_pending",
    "max_outbuf_bytes": "stomp_max_outbuf_bytes",
}


@pytest.mark.parametrize("command", list(summaries(build_parser())))
def test_help_of_every_command_shows_the_default_of_every_option_that_has_one(command: str) -> None:
    parser = _subparsers(build_parser())[command]
    shown = {}
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue  # not listed (demo's --broker: taken only to be refused in words)
        text = (action.help or "") % {**vars(action), "prog": parser.prog}
        if action.dest in SETTING_OPTIONS:
            shown[action.dest] = f"(default: setting {SETTING_OPTIONS[action.dest]}: " in text
        elif action.option_strings and action.default not in (None, argparse.SUPPRESS, [], False):
            shown[action.dest] = f"(default: {action.default}" in text
    assert "log_level" in shown  # every command has at least this one
    assert shown == dict.fromkeys(shown, True)


@pytest.mark.parametrize(
    ("command", "option", "setting", "builtin"),
    [
        ("tasks", "--timeout S", "rpc_timeout_s", "10.0"),
        ("stomp", "--timeout S", "rpc_timeout_s", "10.0"),
        ("status", "--broker URL", "broker_url", "amqp://guest:***@127.0.0.1:5672//"),
        ("call", "--log-level LEVEL", "log_level", "INFO"),
        ("serve", "--data-dir DIR", "data_dir", "data"),
        ("stomp", "--max-connections N", "stomp_max_connections", "1000"),
    ],
)
def test_help_says_which_setting_an_option_defaults_to_and_where_it_is_read(
    command: str, option: str, setting: str, builtin: str
) -> None:
    text = help_of(command)
    env = f"$BUS_TASKS_{setting.upper()}"
    expected = f"(default: setting {setting}: {env}, else config/bus_tasks.toml, else {builtin}"
    assert re.search(re.escape(option) + r" .*?" + re.escape(expected), text), text


def test_help_never_shows_the_default_broker_password() -> None:
    assert "guest:guest" not in help_of("tasks")


# -- bad values, in words a user knows ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks", "--timeout", "x"], "argument --timeout: must be a number of seconds more than 0, not 'x'"),
        (["tasks", "--timeout", "-1"], "argument --timeout: must be a number of seconds more than 0, not '-1'"),
        (["status", UNKNOWN_ID, "--timeout", "nan"], "argument --timeout: must be a number of seconds more than 0, not 'nan'"),
        (["simulate", "storage", "--interval", "0"], "argument --interval-s/--interval: must be a number of seconds more than 0, not '0'"),
        (["inject", "--count", "0"], "argument --count: must be a whole number, at least 1, not '0'"),
        (["inject", "--count", "two"], "argument --count: must be a whole number, at least 1, not 'two'"),
        (["simulate", "gluster", "--tasks", "1.5"], "argument --tasks: must be a whole number, at least 1, not '1.5'"),
        (["demo", "--storage-tasks", "-1"], "argument --storage-tasks: must be a whole number, 0 or more, not '-1'"),
        (["tasks", "--log-level", "loud"], "argument --log-level: 'loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        (["stomp", "--listen", "nowhere"], "argument --listen: 'nowhere' is not HOST:PORT"),
        (["stomp", "--metrics", "9464"], "argument --metrics: '9464' is not HOST:PORT"),
    ],
    ids=["timeout-word", "timeout-negative", "timeout-nan", "interval-zero", "count-zero", "count-word", "tasks-fraction", "storage-tasks-negative", "log-level", "listen", "metrics"],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_the_option_and_what_it_takes(args: list[str], message: str) -> None:
    complaint = refusal(*args)
    assert complaint.endswith(f": error: {message}")
    assert "invalid" not in complaint  # argparse's "invalid <function name> value"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks", "--tag", "a b"], f"'a b' is not a tag: {TAG_RULE}"),
        (["tasks", "--tag", "spm,hsm"], f"'spm,hsm' is not a tag: {TAG_RULE} (--tag spm --tag hsm)"),
        (["inject", "--tag", "x" * 65], f"'{'x' * 65}' is not a tag: {TAG_RULE}"),
        (["retag", UNKNOWN_ID, "--tag", ""], f"'' is not a tag: {TAG_RULE}"),
    ],
    ids=["space", "comma-list", "too-long", "empty"],
)
def test_a_bad_tag_is_refused_with_the_tag_pattern_and_how_to_give_several(
    args: list[str], message: str
) -> None:
    assert refusal(*args).endswith(f": error: argument --tag: {message}")


def test_tags_given_one_per_option_are_kept_in_order() -> None:
    assert parse("tasks", "--tag", "spm", "--tag", "volume:gv1").tag == ["spm", "volume:gv1"]


def test_legacy_with_a_tag_is_a_usage_error_of_the_tasks_command() -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main(["tasks", "--legacy", "info", "--tag", "spm"])
    assert exited.value.code == 2
    assert stderr.getvalue().splitlines()[-1] == (
        "bus-tasks tasks: error: --legacy lists spm tasks only; it takes no --tag or --match"
    )


# -- call METHOD KEY=VALUE ----------------------------------------------------------------


def test_call_reads_values_as_json_when_they_are_json_and_as_strings_otherwise() -> None:
    args = parse(
        "call", "Host.getAllTasks", "n=5", "f=1.5", "yes=true", "none=null", 'tags=["spm","hsm"]',
        'options={"match": "all"}', 'quoted="5"', "word=spm", "spaced=two words", "empty=", "eq=a=b",
    )  # fmt: skip
    assert args.method == "Host.getAllTasks"
    assert dict(args.params) == {
        "n": 5,
        "f": 1.5,
        "yes": True,
        "none": None,
        "tags": ["spm", "hsm"],
        "options": {"match": "all"},
        "quoted": "5",
        "word": "spm",
        "spaced": "two words",
        "empty": "",
        "eq": "a=b",
    }


def test_call_with_no_parameters_sends_none() -> None:
    assert parse("call", "Host.getAllTasksInfo").params == []


def test_call_key_at_file_takes_the_json_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "options.json"
    path.write_text(json.dumps({"match": "all"}))
    assert dict(parse("call", "Host.getAllTasks", f"options=@{path}").params) == {"options": {"match": "all"}}


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("spm", "argument KEY=VALUE: 'spm' is not KEY=VALUE (a VALUE is JSON or a string; KEY=@FILE reads JSON from FILE)"),
        ("=5", "argument KEY=VALUE: '=5' is not KEY=VALUE (a VALUE is JSON or a string; KEY=@FILE reads JSON from FILE)"),
    ],
    ids=["no-equals", "no-key"],
)  # fmt: skip
def test_call_refuses_a_parameter_that_is_not_key_value_naming_it(param: str, message: str) -> None:
    assert refusal("call", "Host.getAllTasks", param).endswith(f"bus-tasks call: error: {message}")


def test_call_refuses_a_file_that_cannot_be_read_or_is_not_json(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert refusal("call", "M", f"a=@{missing}").endswith(
        f"argument KEY=VALUE: a=@{missing}: cannot read {missing}: No such file or directory"
    )
    assert re.search(
        rf"argument KEY=VALUE: b=@{re.escape(str(broken))}: {re.escape(str(broken))} is not JSON: .+",
        refusal("call", "M", f"b=@{broken}"),
    )


def test_call_refuses_a_parameter_given_twice() -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main(["call", "Task.getStatus", f"taskID={UNKNOWN_ID}", "taskID=x"])
    assert exited.value.code == 2
    assert (
        stderr.getvalue().splitlines()[-1]
        == "bus-tasks call: error: parameter 'taskID' is given more than once"
    )


# -- plugins ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["serve", "--data-dir", "gluster"], "serve"),
        (["--log-level", "INFO", "--broker", "memory://", "tasks", "--json"], "tasks"),
        (["--log-level", "serve", "gluster"], "gluster"),  # an option's value is no command
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_word_that_is_no_option_nor_a_value(
    argv: list[str], named: str | None
) -> None:
    assert command_named(argv) == named


def plugin_loads(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    """How often ``bus-tasks ARGV`` (which must exit 0 at its help) loaded the installed plugins."""
    loads: list[None] = []

    def counted() -> dict[str, Any]:
        loads.append(None)
        return installed()

    monkeypatch.setattr("bus_tasks.workers.cli.installed_plugins", counted)
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return len(loads)


def test_a_built_in_command_runs_without_loading_the_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plugin_loads(monkeypatch, ["--log-level", "INFO", "serve", "--help"]) == 0


@pytest.mark.parametrize("argv", [["--help"], ["gluster", "--help"]], ids=["help", "plugin"])
def test_the_help_and_a_plugins_command_load_the_plugins(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    assert plugin_loads(monkeypatch, argv) == 1
