"""The gluster plugin with the aggregator on memory://: listings, Task.stop/revert, restart resync."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.brokers import System, admin_of
from support.gluster import FakeGluster, Node, Task, failed_xml, migration_xml

from bus_tasks import names
from bus_tasks.config import Settings
from bus_tasks.core.model import State, TaskRecord
from bus_tasks.errors import BusTasksError, SubsystemTaken
from bus_tasks.plugins import PluginHost
from bus_tasks.plugins.gluster.cli import GlusterCli
from bus_tasks.plugins.gluster.plugin import GlusterOptions, GlusterPlugin, GlusterSubsystem
from bus_tasks.protocol.shapes import record_from_details
from bus_tasks.subsystem.runner import SubsystemRunner
from bus_tasks.testing import wait_until

REBALANCE_ID = "1bea87af-d176-4044-b4a2-46724ab0f070"
OTHER_ID = "2bea87af-d176-4044-b4a2-46724ab0f071"


class Plugin:
    """``bus-tasks gluster``'s subsystem on its runner, over a fake gluster CLI."""

    def __init__(self, system: System, fake: FakeGluster, restored: Sequence[TaskRecord] = ()) -> None:
        self.runner = SubsystemRunner.open("gluster", system.broker.connect)
        self.gluster = GlusterSubsystem(
            self.runner, GlusterCli(str(fake.binary), timeout_s=5.0), restored=restored
        )
        self.poller = self.gluster.poller

    def start(self) -> None:
        """The first poll, then the announce of what it found (the name was claimed at open)."""
        self.gluster.turn()
        assert self.runner.announced, "the first poll did not succeed"

    def close(self) -> None:
        stopped = self.runner.close()  # gives up the claim on the subsystem name
        assert stopped, "the plugin's control thread did not stop"


def _rebalance(
    fake: FakeGluster, volume: str, task_id: str, status_str: str, status: int, *, files: int = 0
) -> None:
    node = Node(status=status, status_str=status_str, files=files)
    fake.answer(
        f"volume rebalance {volume} status --xml", migration_xml("volRebalance", task_id, [node], node)
    )


def _wait_state(system: System, task_id: str, state: str) -> dict[str, Any]:
    client = system.client()
    return wait_until(  # type: ignore[no-any-return]
        lambda: (t := client.get_all_tasks().get(task_id)) is not None and t["state"] == state and t,
        timeout_s=10,
        what=f"task {task_id} {state}",
    )


MakePlugin = Callable[..., Plugin]


@pytest.fixture
def fake(tmp_path: Path) -> FakeGluster:
    return FakeGluster(tmp_path / "fake")


@pytest.fixture
def make_plugin(memory_system: System, fake: FakeGluster) -> Iterator[MakePlugin]:
    """``make_plugin(restored=())``: a plugin on the memory system; every one is closed at the end."""
    made: list[Plugin] = []

    def make(restored: Sequence[TaskRecord] = ()) -> Plugin:
        made.append(Plugin(memory_system, fake, restored))
        return made[-1]

    yield make
    for plugin in reversed(made):
        plugin.close()


def test_get_all_tasks_shows_vdsm_and_gluster_tasks_the_gluster_tag_only_gluster_and_legacy_calls_only_spm(
    memory_system: System, fake: FakeGluster, make_plugin: MakePlugin
) -> None:
    vdsm = memory_system.publisher("vdsm")
    spm = vdsm.create("createVolume", ["spm"], state=State.RUNNING).id
    hsm = vdsm.create("downloadImage", ["hsm"], state=State.RUNNING).id
    fake.listing([Task("gv1", "Rebalance", REBALANCE_ID, "in progress")])
    _rebalance(fake, "gv1", REBALANCE_ID, "in progress", 1, files=7)
    make_plugin().start()
    client = memory_system.client()

    gluster = _wait_state(memory_system, REBALANCE_ID, "running")

    assert set(client.get_all_tasks()) == {spm, hsm, REBALANCE_ID}
    assert list(client.get_all_tasks(["gluster"])) == [REBALANCE_ID]
    assert set(client.get_all_tasks_info()) == {spm}
    assert set(client.get_all_tasks_statuses()) == {spm}
    assert {
        k: gluster[k] for k in ("subsystem", "verb", "tags", "tag", "taskState", "taskResult", "code")
    } == {
        "subsystem": "gluster",
        "verb": "rebalance",
        "tags": ["gluster", "volume:gv1", "type:REBALANCE"],
        "tag": "gluster",
        "taskState": "running",
        "taskResult": "",
        "code": 0,
    }
    assert (gluster["data"]["filesMoved"], gluster["data"]["volume"]) == (7, "gv1")


def test_task_stop_through_the_rpc_runs_gluster_s_stop_answers_true_and_the_task_ends_failed(
    memory_system: System, fake: FakeGluster, make_plugin: MakePlugin
) -> None:
    fake.listing([Task("gv1", "Rebalance", REBALANCE_ID, "in progress")])
    _rebalance(fake, "gv1", REBALANCE_ID, "in progress", 1)
    stopped = Node(status=2, status_str="stopped", files=3)
    fake.answer(
        "volume rebalance gv1 stop --xml", migration_xml("volRebalance", REBALANCE_ID, [stopped], stopped)
    )
    make_plugin().start()
    _wait_state(memory_system, REBALANCE_ID, "running")

    assert memory_system.client().stop_task(REBALANCE_ID) is True

    assert "--mode=script volume rebalance gv1 stop --xml" in fake.calls
    task = _wait_state(memory_system, REBALANCE_ID, "failed")
    assert (task["taskState"], task["taskResult"], task["code"], task["message"]) == (
        "finished",
        "cleanFailure",
        411,
        "Task is aborted: stopped by request",
    )


def test_task_stop_gluster_refuses_answers_4107_with_op_errstr_and_the_next_poll_shows_it_running(
    memory_system: System, fake: FakeGluster, make_plugin: MakePlugin
) -> None:
    fake.listing([Task("gv1", "Rebalance", REBALANCE_ID, "in progress")])
    _rebalance(fake, "gv1", REBALANCE_ID, "in progress", 1)
    fake.answer("volume rebalance gv1 stop --xml", failed_xml("Commit failed on localhost.", body=""), rc=1)
    plugin = make_plugin()
    plugin.start()
    _wait_state(memory_system, REBALANCE_ID, "running")

    with pytest.raises(BusTasksError) as caught:
        memory_system.client().stop_task(REBALANCE_ID)
    plugin.poller.poll()

    assert (caught.value.code, caught.value.message) == (
        4107,
        "Command failed\nerror: Commit failed on localhost.\nreturn code: -1",
    )
    _wait_state(memory_system, REBALANCE_ID, "running")


def test_task_revert_of_a_finished_gluster_task_answers_100_saying_revert_is_not_supported(
    memory_system: System, fake: FakeGluster, make_plugin: MakePlugin
) -> None:
    fake.listing([Task("gv1", "Rebalance", REBALANCE_ID, "completed", 3)])
    _rebalance(fake, "gv1", REBALANCE_ID, "completed", 3)
    make_plugin().start()
    _wait_state(memory_system, REBALANCE_ID, "finished")

    with pytest.raises(BusTasksError) as caught:
        memory_system.client().revert_task(REBALANCE_ID)

    assert (caught.value.code, caught.value.message) == (
        100,
        f"General Exception: revert is not supported for gluster tasks (task {REBALANCE_ID})",
    )


def test_after_a_restart_the_plugin_adopts_the_aggregator_s_records_and_its_resync_lists_exactly_gluster_s(
    memory_system: System, fake: FakeGluster, make_plugin: MakePlugin
) -> None:
    fake.listing(
        [
            Task("gv1", "Rebalance", REBALANCE_ID, "in progress"),
            Task("gv2", "Rebalance", OTHER_ID, "in progress"),
        ]
    )
    _rebalance(fake, "gv1", REBALANCE_ID, "in progress", 1, files=1)
    _rebalance(fake, "gv2", OTHER_ID, "in progress", 1)
    first = make_plugin()
    first.start()
    created = _wait_state(memory_system, REBALANCE_ID, "running")
    _wait_state(memory_system, OTHER_ID, "running")
    first.close()

    # While it was down, gv2's rebalance was stopped and gv1's moved on.
    fake.listing([Task("gv1", "Rebalance", REBALANCE_ID, "in progress")], volumes=["gv2"])
    _rebalance(fake, "gv1", REBALANCE_ID, "in progress", 1, files=9)
    client = memory_system.client()
    known = [record_from_details(d) for d in client.get_all_tasks().values() if d["subsystem"] == "gluster"]
    make_plugin(restored=known).start()

    wait_until(
        lambda: (
            list(client.get_all_tasks(["gluster"])) == [REBALANCE_ID]
            and client.get_all_tasks()[REBALANCE_ID]["data"]["filesMoved"] == 9
        ),
        timeout_s=10,
        what="the view holding exactly what gluster lists",
    )
    assert client.get_all_tasks()[REBALANCE_ID]["createdAt"] == created["createdAt"]


def test_a_second_plugin_is_refused_before_it_asks_the_aggregator_runs_gluster_or_publishes_anything(
    memory_system: System, fake: FakeGluster, make_plugin: MakePlugin
) -> None:
    fake.listing([Task("gv1", "Rebalance", REBALANCE_ID, "in progress")])
    _rebalance(fake, "gv1", REBALANCE_ID, "in progress", 1)
    make_plugin().start()
    before = _wait_state(memory_system, REBALANCE_ID, "running")
    tap = names.events_queue("tap")
    memory_system.broker.connection().topology.declare_queue(tap)
    fake.forget("volume status all tasks --xml")  # the second's gluster is down: no claim waits for it
    calls = len(fake.calls)
    host = PluginHost(settings=Settings(), stop=threading.Event(), connect=memory_system.broker.connect)

    with pytest.raises(SubsystemTaken, match="'gluster' is already owned by a live process"):
        GlusterPlugin().run(GlusterOptions(gluster_bin=str(fake.binary), interval_s=0.1), host)

    assert admin_of(memory_system.broker.connection()).queue_size(tap) == 0
    assert memory_system.client().get_all_tasks() == {REBALANCE_ID: before}
    assert not host.ready.is_set()
    assert fake.calls[calls:] == []  # the second never ran gluster (the owner here takes no turns)
