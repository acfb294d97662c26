"""A plugin's typed options as ``bus-tasks`` options: names, defaults, help, checks; the contract
itself knows no argparse and nothing of ``workers``."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys

import pytest
from pydantic import Field, model_validator

from bus_tasks.config import Settings
from bus_tasks.plugins import PluginHost, PluginOptions, installed
from bus_tasks.plugins.gluster.plugin import GlusterOptions
from bus_tasks.workers import plugins
from bus_tasks.workers.commands import EXIT_USAGE


class Options(PluginOptions):
    poll_s: float = Field(2.5, gt=0, allow_inf_nan=False, description="seconds between polls")
    name: str = Field(description="what to watch", json_schema_extra={"metavar": "NAME"})
    workers: int = Field(1, ge=1, le=8, description="how many at once")
    low_s: float = Field(0.5, gt=0, description="at most poll_s")

    @model_validator(mode="after")
    def _low_at_most_poll(self) -> Options:
        if self.low_s > self.poll_s:
            raise ValueError("low_s must be at most poll_s")
        return self


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog="bus-tasks demo-plugin")
    plugins.add_options(made, Options)
    return made


def refusal(*args: str) -> str:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        parser().parse_args(args)
    assert exited.value.code == 2
    return stderr.getvalue().splitlines()[-1]


def test_each_field_is_an_option_with_its_default_and_the_values_come_back_typed() -> None:
    args = parser().parse_args(["--name", "gv1", "--workers", "3", "--poll-s", "4"])

    assert vars(args) == {"poll_s": 4.0, "name": "gv1", "workers": 3, "low_s": 0.5}
    assert Options.model_validate(vars(args)) == Options(poll_s=4.0, name="gv1", workers=3, low_s=0.5)


def test_help_shows_dashed_names_metavars_descriptions_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    text = parser().format_help()

    lines = {" ".join(line.split()) for line in text.splitlines()}

    assert {
        "--poll-s S seconds between polls (default: 2.5)",
        "--name NAME what to watch",  # required: no default to show
        "--workers WORKERS how many at once (default: 1)",
        "--low-s S at most poll_s (default: 0.5)",
    } <= lines


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (
            ["--name", "x", "--poll-s", "0"],
            "argument --poll-s: must be a number of seconds more than 0, not '0'",
        ),
        (
            ["--name", "x", "--poll-s", "nan"],
            "argument --poll-s: must be a number of seconds more than 0, not 'nan'",
        ),
        (
            ["--name", "x", "--workers", "9"],
            "argument --workers: input should be less than or equal to 8, not '9'",
        ),
        (
            ["--name", "x", "--workers", "two"],
            "argument --workers: input should be a valid integer, unable to parse string as an integer, not 'two'",
        ),
        ([], "the following arguments are required: --name"),
    ],
)
def test_a_bad_value_is_refused_by_argparse_in_one_line(args: list[str], complaint: str) -> None:
    assert refusal(*args) == f"bus-tasks demo-plugin: error: {complaint}"


def test_gluster_s_options_keep_their_names_defaults_and_checks() -> None:
    made = argparse.ArgumentParser()
    plugins.add_options(made, GlusterOptions)

    assert vars(made.parse_args([])) == {"interval_s": 10.0, "gluster_bin": "gluster", "timeout_s": 120.0}
    assert GlusterOptions.model_validate(
        vars(made.parse_args(["--interval-s", "0.5", "--gluster-bin", "/opt/gluster", "--timeout-s", "3"]))
    ) == GlusterOptions(interval_s=0.5, gluster_bin="/opt/gluster", timeout_s=3.0)


def test_options_are_frozen_and_refuse_unknown_names() -> None:
    options = GlusterOptions()

    with pytest.raises(ValueError, match="frozen"):
        options.interval_s = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="interval"):
        GlusterOptions.model_validate({"intervall_s": 1.0})


def test_the_installed_gluster_plugin_states_typed_options() -> None:
    gluster = installed()["gluster"]

    assert gluster.options is GlusterOptions
    assert gluster.summary.startswith("publish the tasks of the local glusterd")


def test_the_plugin_contract_and_the_gluster_plugin_import_nothing_from_workers() -> None:
    code = (
        "import sys, json; import bus_tasks.plugins, bus_tasks.plugins.gluster.plugin; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert [name for name in json.loads(done.stdout) if name.startswith("bus_tasks.workers")] == []


class _Refusing:
    summary = "a plugin whose run must not be reached"
    options = Options

    def run(self, options: Options, host: PluginHost) -> int:
        raise AssertionError("run was called with options that break a rule")


def test_options_that_break_a_rule_between_them_are_a_usage_error_in_one_line_and_nothing_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = plugins.command("demo-plugin", _Refusing())
    args = parser().parse_args(["--name", "x", "--poll-s", "1", "--low-s", "2"])

    assert run(args, Settings()) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("bus-tasks demo-plugin: ")
    assert "low_s must be at most poll_s" in err[0]
