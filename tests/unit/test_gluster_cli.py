"""The gluster CLI runner against a fake gluster executable: answers, failures, hangs, recovery."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from support.gluster import CONNECTION_FAILED, FIXTURES, FakeGluster, Task, failed_xml
from support.timing import Stopwatch, assert_ended_by

from bus_tasks.plugins.gluster.cli import GlusterCli
from bus_tasks.plugins.gluster.errors import (
    GlusterCommandFailed,
    GlusterRebalanceStatusFailed,
    GlusterRemoveBrickStatusFailed,
    GlusterTasksListFailed,
)
from bus_tasks.testing import wait_until

TASK_ID = "1bea87af-d176-4044-b4a2-46724ab0f070"
TASKS = "volume status all tasks --xml"


@pytest.fixture
def fake(tmp_path: Path) -> FakeGluster:
    return FakeGluster(tmp_path / "fake")


def _cli(fake: FakeGluster, **kwargs: object) -> GlusterCli:
    return GlusterCli(str(fake.binary), **kwargs)  # type: ignore[arg-type]


def test_every_call_runs_in_script_mode_with_xml_and_returns_the_parsed_answer(fake: FakeGluster) -> None:
    fake.answer(TASKS, (FIXTURES / "glusterVolumeTasks.xml").read_text())
    fake.answer(
        "volume rebalance gv1 status --xml", (FIXTURES / "glusterVolumeRebalanceStatus.xml").read_text()
    )
    fake.answer(
        "volume remove-brick gv1 bricknode1:/gfs/b3 status --xml",
        (FIXTURES / "glusterVolumeRemoveBricksStatus.xml").read_text(),
    )
    cli = _cli(fake)

    listed = cli.volume_tasks()
    rebalance = cli.rebalance_status("gv1")
    remove = cli.remove_brick_status("gv1", ["bricknode1:/gfs/b3"])

    assert [t.task_id for t in listed] == [
        "5e7fb5b7-1e23-415c-9b3f-e7e7fd896ea1",
        TASK_ID,
        "5e7fb5b7-1e23-415c-9b3f-e7e7fd896eae",
    ]
    assert (rebalance.task_id, rebalance.aggregate.files_moved) == (
        "cffd9543-55dc-46ba-a0ac-825aba103948",
        78,
    )
    assert remove.aggregate.files_scanned == 278
    assert fake.calls == [
        "--mode=script volume status all tasks --xml",
        "--mode=script volume rebalance gv1 status --xml",
        "--mode=script volume remove-brick gv1 bricknode1:/gfs/b3 status --xml",
    ]


def test_stop_commands_are_the_ones_gluster_md_names(fake: FakeGluster) -> None:
    stopped = (FIXTURES / "glusterVolumeRebalanceStatus.xml").read_text()
    fake.answer("volume rebalance gv1 stop --xml", stopped)
    fake.answer("volume remove-brick gv1 h:/b3 h:/b4 stop --xml", stopped)

    _cli(fake).rebalance_stop("gv1")
    _cli(fake).remove_brick_stop("gv1", ["h:/b3", "h:/b4"])

    assert fake.calls == [
        "--mode=script volume rebalance gv1 stop --xml",
        "--mode=script volume remove-brick gv1 h:/b3 h:/b4 stop --xml",
    ]


def test_glusterd_down_is_a_tasks_list_failure_quoting_the_cli_and_its_exit_status(fake: FakeGluster) -> None:
    with pytest.raises(GlusterTasksListFailed) as caught:
        _cli(fake).volume_tasks()

    assert caught.value.code == 4161
    assert caught.value.message == f"Volume tasks list failed\nerror: {CONNECTION_FAILED}\nreturn code: 1"


def test_op_ret_not_zero_with_exit_status_0_is_a_failure_with_op_errstr(fake: FakeGluster) -> None:
    fake.answer(
        "volume remove-brick gv1 h:/b3 status --xml", failed_xml("remove-brick not started for volume gv1.")
    )

    with pytest.raises(GlusterRemoveBrickStatusFailed) as caught:
        _cli(fake).remove_brick_status("gv1", ["h:/b3"])

    assert caught.value.code == 4152
    assert (
        caught.value.message
        == "Volume remove brick status failed\nerror: remove-brick not started for volume gv1.\nreturn code: -1"
    )


def test_a_refused_stop_is_a_command_failure_4107_with_op_errstr(fake: FakeGluster) -> None:
    errstr = "Rebalance not started for volume gv1."
    fake.answer(
        "volume rebalance gv1 stop --xml", failed_xml(errstr, body="<cliOp>volRebalance</cliOp>"), rc=1
    )

    with pytest.raises(GlusterCommandFailed) as caught:
        _cli(fake).rebalance_stop("gv1")

    assert (caught.value.code, caught.value.message) == (
        4107,
        f"Command failed\nerror: {errstr}\nreturn code: -1",
    )


def test_xml_that_does_not_parse_with_exit_status_0_is_a_failure_saying_so(fake: FakeGluster) -> None:
    fake.answer("volume rebalance gv1 status --xml", "<cliOutput><opRet>0</opRet><volRebalance>")

    with pytest.raises(GlusterRebalanceStatusFailed) as caught:
        _cli(fake).rebalance_status("gv1")

    assert caught.value.code == 4138
    assert caught.value.message.startswith("Volume rebalance status failed\nerror: output is not XML")


def test_a_binary_that_does_not_exist_is_a_failure_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "gluster"

    with pytest.raises(GlusterTasksListFailed, match=f"cannot run {missing}: No such file or directory"):
        GlusterCli(str(missing)).volume_tasks()


def test_a_call_that_hangs_is_killed_at_its_timeout_with_what_it_started(
    fake: FakeGluster, tmp_path: Path
) -> None:
    fake.answer(TASKS, "never printed", sleep_s=61.37)  # a duration no other process sleeps
    cli = _cli(fake, timeout_s=1.0)

    with (
        Stopwatch() as watch,
        pytest.raises(GlusterTasksListFailed, match=r"did not answer within 1s \(killed\)"),
    ):
        cli.volume_tasks()

    assert_ended_by(watch, 1.0, not_before_s=1.0)
    # The fake's own child (its sleep) was killed too: nothing of the call is left running.
    wait_until(lambda: not _running("sleep 61.37"), timeout_s=5.0, what="the fake's sleep killed")


def test_a_call_running_when_the_plugin_stops_is_killed_at_once(fake: FakeGluster) -> None:
    fake.answer(TASKS, "never printed", sleep_s=60)
    stop = threading.Event()
    cli = _cli(fake, timeout_s=120.0, stop=stop)
    threading.Timer(0.5, stop.set).start()

    with Stopwatch() as watch, pytest.raises(GlusterTasksListFailed, match="the plugin is stopping"):
        cli.volume_tasks()

    assert_ended_by(watch, 0.5)


def test_the_same_runner_answers_again_once_the_cli_recovers(fake: FakeGluster) -> None:
    cli = _cli(fake)
    with pytest.raises(GlusterTasksListFailed):
        cli.volume_tasks()
    fake.listing([Task("gv1", "Rebalance", TASK_ID, "in progress")])

    assert [(t.volume, t.task_id, t.status_str) for t in cli.volume_tasks()] == [
        ("gv1", TASK_ID, "in progress")
    ]


def test_a_timeout_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s must be more than 0"):
        GlusterCli(timeout_s=0)


def _running(command: str) -> bool:
    """Whether a process of this machine runs ``command`` (read from /proc)."""
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().replace(b"\0", b" ").strip() == command.encode():
                    return True
        except OSError:
            continue
    return False
