"""The poller over a fake gluster CLI: what it publishes, the lifecycle quirks, failures, stop."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from support.brokers import Broker
from support.factories import make_record
from support.gluster import FakeGluster, Node, Task, failed_xml, migration_xml

from bus_tasks.core.model import State, TaskRecord
from bus_tasks.plugins.gluster.cli import GlusterCli
from bus_tasks.plugins.gluster.errors import GlusterCommandFailed, RevertNotSupported
from bus_tasks.plugins.gluster.poller import GlusterPoller
from bus_tasks.subsystem.publisher import TaskPublisher

REBALANCE_ID = "1bea87af-d176-4044-b4a2-46724ab0f070"
REMOVE_ID = "5e7fb5b7-1e23-415c-9b3f-e7e7fd896ea1"
BRICK = "host1:/gfs/b3"
REBALANCE_STATUS = "volume rebalance gv1 status --xml"
REMOVE_STATUS = f"volume remove-brick gv1 {BRICK} status --xml"


class RecordingBus:
    """A memory:// connection that remembers every event published through it."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.events: list[dict[str, Any]] = []

    def publish(self, body: bytes, **kwargs: Any) -> None:
        self._connection.publish(body, **kwargs)
        message = json.loads(body)
        if "task" in message:
            self.events.append(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def take(self) -> list[tuple[str, str, str]]:
        """(event, task id, state) of each event since the last take."""
        taken = [(e["event"], e["task"]["id"], e["task"]["state"]) for e in self.events]
        self.events.clear()
        return taken


class Rig:
    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.fake = FakeGluster(tmp_path / "fake")
        self.bus = RecordingBus(broker.connection())
        self.publisher = TaskPublisher(self.bus, "gluster")
        self.cli = GlusterCli(str(self.fake.binary), timeout_s=5.0)
        self.poller = GlusterPoller(self.publisher, self.cli)

    def restart(self, restored: list[TaskRecord]) -> None:
        """A new publisher and poller, as after a plugin restart."""
        self.publisher = TaskPublisher(self.bus, "gluster")
        self.poller = GlusterPoller(self.publisher, self.cli, restored=restored)

    def rebalance(self, status_str: str, status: int, **counters: Any) -> None:
        node = Node(status=status, status_str=status_str, **counters)
        self.fake.answer(REBALANCE_STATUS, migration_xml("volRebalance", REBALANCE_ID, [node], node))

    def remove_brick(self, status_str: str, status: int, **counters: Any) -> None:
        node = Node(status=status, status_str=status_str, **counters)
        self.fake.answer(REMOVE_STATUS, migration_xml("volRemoveBrick", REMOVE_ID, [node], node))

    def record(self, task_id: str) -> TaskRecord:
        return self.publisher.get(task_id)


@pytest.fixture
def rig(memory_broker: Broker, tmp_path: Path) -> Rig:
    return Rig(memory_broker, tmp_path)


def _listed_rebalance(status_str: str = "in progress", status: int = 1) -> Task:
    return Task("gv1", "Rebalance", REBALANCE_ID, status_str, status)


def _listed_remove(status_str: str = "in progress", status: int = 1) -> Task:
    return Task("gv1", "Remove brick", REMOVE_ID, status_str, status, (BRICK,))


def test_a_listed_rebalance_is_created_with_gluster_s_id_tags_verb_and_aggregate_counters(rig: Rig) -> None:
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1, files=10, size=163840, lookups=300, runtime="1.50")

    assert rig.poller.poll() is True

    record = rig.record(REBALANCE_ID)
    counters = {
        "filesScanned": 300,
        "filesMoved": 10,
        "filesFailed": 0,
        "filesSkipped": 0,
        "totalSizeMoved": 163840,
        "runtime": 1.5,
    }
    assert (
        record.id,
        record.subsystem,
        record.verb,
        record.tags,
        record.state,
        record.code,
        record.message,
    ) == (
        REBALANCE_ID,
        "gluster",
        "rebalance",
        ("gluster", "volume:gv1", "type:REBALANCE"),
        State.RUNNING,
        0,
        "in progress",
    )
    assert record.data == {
        "volume": "gv1",
        "type": "REBALANCE",
        "bricks": [],
        "status": "in progress",
        **counters,
        "hosts": [
            {
                "name": "localhost",
                "id": "883626f8-4d29-4d02-8c5d-c9f48c5b2445",
                "status": "in progress",
                **counters,
            }
        ],
    }
    assert rig.bus.take() == [("created", REBALANCE_ID, "running")]


def test_a_poll_that_sees_nothing_new_publishes_nothing_and_a_changed_counter_publishes_once(
    rig: Rig,
) -> None:
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1, files=10)
    rig.poller.poll()
    rig.bus.take()

    rig.poller.poll()
    assert rig.bus.take() == []

    rig.rebalance("in progress", 1, files=11)
    rig.poller.poll()
    assert rig.bus.take() == [("updated", REBALANCE_ID, "running")]
    assert rig.record(REBALANCE_ID).data["filesMoved"] == 11


def test_a_completed_rebalance_is_finished_and_stays_finished_when_a_remove_brick_replaces_it(
    rig: Rig,
) -> None:
    rig.fake.listing([_listed_rebalance("completed", 3)])
    rig.rebalance("completed", 3, files=78)
    rig.poller.poll()
    rig.poller.poll()
    assert rig.bus.take() == [("created", REBALANCE_ID, "finished")]

    rig.fake.listing([_listed_remove()])
    rig.remove_brick("in progress", 1)
    rig.poller.poll()

    # No event for the rebalance: it was finished and stays so; gluster no longer lists it.
    assert rig.bus.take() == [("created", REMOVE_ID, "running")]
    assert set(rig.publisher.tasks) == {REMOVE_ID}


def test_a_running_rebalance_that_vanishes_was_stopped_and_is_published_failed(rig: Rig) -> None:
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1)
    rig.poller.poll()
    rig.bus.take()

    rig.fake.listing([], volumes=["gv1"])  # glusterfs 10.3 after a stop: <tasks/> at once
    rig.poller.poll()

    event = rig.bus.events[-1]["task"]
    assert rig.bus.take() == [("finished", REBALANCE_ID, "failed")]
    assert (event["code"], event["message"]) == (411, "Task is aborted: gluster no longer lists it (stopped)")
    assert rig.publisher.tasks == {}  # what the publisher holds is what gluster lists


def test_a_completed_remove_brick_is_commit_pending_until_it_vanishes(rig: Rig) -> None:
    rig.fake.listing([_listed_remove()])
    rig.remove_brick("in progress", 1)
    rig.poller.poll()
    rig.fake.listing([_listed_remove("completed", 3)])
    rig.remove_brick("completed", 3, files=300)
    rig.poller.poll()
    done = rig.record(REMOVE_ID)
    assert (done.state, done.data["commitPending"], done.message) == (
        State.FINISHED,
        True,
        "completed: migration complete, commit pending",
    )
    rig.bus.take()

    rig.fake.listing([], volumes=["gv1"])  # committed
    rig.poller.poll()

    final = rig.bus.events[-1]["task"]
    assert rig.bus.take() == [("finished", REMOVE_ID, "finished")]
    assert (final["data"]["commitPending"], final["data"]["filesMoved"]) == (False, 300)


def test_fix_layout_runs_and_completes_as_a_rebalance_does(rig: Rig) -> None:
    rig.fake.listing([_listed_rebalance("fix-layout in progress", 5)])
    rig.rebalance("fix-layout in progress", 5)
    rig.poller.poll()
    rig.fake.listing([_listed_rebalance("fix-layout completed", 7)])
    rig.rebalance("fix-layout completed", 7)
    rig.poller.poll()

    assert rig.bus.take() == [("created", REBALANCE_ID, "running"), ("finished", REBALANCE_ID, "finished")]


def test_a_rebalance_reset_by_a_replace_brick_is_failed(rig: Rig) -> None:
    rig.fake.listing([_listed_rebalance("reset due to replace-brick", 9)])
    rig.rebalance("reset due to replace-brick", 9)
    rig.poller.poll()

    assert (rig.record(REBALANCE_ID).state, rig.record(REBALANCE_ID).code) == (State.FAILED, 100)


def test_while_glusterd_is_down_the_last_known_tasks_stay_with_one_log_line_and_the_plugin_catches_up(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1, files=10)
    rig.poller.poll()
    before = rig.record(REBALANCE_ID)
    rig.bus.take()
    rig.fake.forget("volume status all tasks --xml")  # every call: "Connection failed", rc 1

    with caplog.at_level(logging.INFO, logger="bus_tasks.plugins.gluster"):
        assert [rig.poller.poll() for _ in range(3)] == [False, False, False]
        # Meanwhile gluster went on (GLUSTER.md: the work continues without glusterd).
        rig.fake.listing([_listed_rebalance("completed", 3)])
        rig.rebalance("completed", 3, files=40)
        assert rig.poller.poll() is True

    assert rig.record(REBALANCE_ID).created_at == before.created_at
    assert rig.bus.take() == [("finished", REBALANCE_ID, "finished")]
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in messages] == [
        "gluster tasks listing failed, keeping the 1 last known tasks",
        "gluster CLI answers again",
        f"gluster task {REBALANCE_ID}",  # running -> finished, once caught up
    ]
    assert "Connection failed. Please check if gluster daemon is operational. | return code: 1" in messages[0]


@pytest.mark.parametrize(
    "listing",
    [
        failed_xml("Another transaction is in progress. Please try again after some time.", body=""),
        "<cliOutput><opRet>0</opRet><volStatus><volumes><volume>",
    ],
    ids=["op-ret-not-zero-exit-0", "malformed-xml"],
)
def test_a_failed_or_malformed_listing_changes_nothing(rig: Rig, listing: str) -> None:
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1)
    rig.poller.poll()
    rig.bus.take()
    rig.fake.answer("volume status all tasks --xml", listing)

    assert rig.poller.poll() is False
    assert rig.bus.take() == []
    assert set(rig.publisher.tasks) == {REBALANCE_ID}


def test_a_listing_that_hangs_is_killed_and_the_tasks_stay(rig: Rig) -> None:
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1)
    rig.poller.poll()
    rig.fake.answer("volume status all tasks --xml", "late", sleep_s=30)
    rig.poller.cli = GlusterCli(str(rig.fake.binary), timeout_s=0.5)

    assert rig.poller.poll() is False
    assert rig.record(REBALANCE_ID).state is State.RUNNING


def test_a_status_call_that_fails_skips_only_that_task_which_is_not_taken_for_vanished(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.fake.listing([_listed_rebalance(), Task("gv2", "Rebalance", REMOVE_ID, "in progress")])
    rig.rebalance("in progress", 1, files=1)
    node = Node(files=1)
    rig.fake.answer(
        "volume rebalance gv2 status --xml", migration_xml("volRebalance", REMOVE_ID, [node], node)
    )
    rig.poller.poll()
    rig.bus.take()
    rig.fake.answer(REBALANCE_STATUS, failed_xml("Rebalance not started for volume gv1.", body=""))
    node = Node(files=2)
    rig.fake.answer(
        "volume rebalance gv2 status --xml", migration_xml("volRebalance", REMOVE_ID, [node], node)
    )

    with caplog.at_level(logging.WARNING, logger="bus_tasks.plugins.gluster"):
        rig.poller.poll()
        rig.poller.poll()

    assert rig.bus.take() == [("updated", REMOVE_ID, "running")]
    assert rig.record(REBALANCE_ID).state is State.RUNNING  # kept as last known
    assert [r.getMessage() for r in caplog.records] == [
        f"gluster task {REBALANCE_ID} (volume gv1) skipped: Volume rebalance status failed | "
        "error: Rebalance not started for volume gv1. | return code: -1"
    ]


def test_a_task_first_seen_after_a_restart_is_adopted_keeping_its_record_not_created_again(rig: Rig) -> None:
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1, files=10)
    rig.poller.poll()
    known = rig.record(REBALANCE_ID)
    rig.bus.take()

    rig.restart(restored=[known])
    rig.rebalance("in progress", 1, files=20)
    rig.poller.poll()

    assert rig.bus.take() == [("updated", REBALANCE_ID, "running")]
    assert rig.record(REBALANCE_ID).created_at == known.created_at
    assert set(rig.publisher.tasks) == {REBALANCE_ID}


def test_a_task_that_vanished_while_the_plugin_was_down_is_published_done_and_not_kept(rig: Rig) -> None:
    running = make_record(
        subsystem="gluster",
        verb="rebalance",
        state=State.RUNNING,
        data={"volume": "gv9", "type": "REBALANCE"},
    )
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1)
    rig.restart(restored=[running])

    rig.poller.poll()

    assert sorted(rig.bus.take()) == [
        ("created", REBALANCE_ID, "running"),
        ("finished", running.id, "failed"),
    ]
    assert set(rig.publisher.tasks) == {REBALANCE_ID}


def test_a_finished_task_cleared_through_the_aggregator_is_not_brought_back_while_gluster_lists_it(
    rig: Rig,
) -> None:
    rig.fake.listing([_listed_rebalance("completed", 3)])
    rig.rebalance("completed", 3)
    rig.poller.poll()
    rig.publisher.forget(REBALANCE_ID)  # what a clear from the aggregator does
    rig.bus.take()

    rig.poller.poll()

    assert rig.bus.take() == []
    assert rig.publisher.tasks == {}


def test_stop_runs_gluster_s_stop_and_fails_the_task_with_its_final_counters(rig: Rig) -> None:
    rig.fake.listing([_listed_remove()])
    rig.remove_brick("in progress", 1, files=5)
    rig.poller.poll()
    stopped = Node(files=233, status=2, status_str="stopped")
    rig.fake.answer(
        f"volume remove-brick gv1 {BRICK} stop --xml",
        migration_xml("volRemoveBrick", REMOVE_ID, [stopped], stopped),
    )
    rig.publisher.update(REMOVE_ID, state=State.ABORTING)  # as SubsystemControl does before the handler
    rig.bus.take()

    rig.poller.stop_task(REMOVE_ID)

    assert f"--mode=script volume remove-brick gv1 {BRICK} stop --xml" in rig.fake.calls
    record = rig.record(REMOVE_ID)
    assert (record.state, record.code, record.message, record.data["filesMoved"], record.data["status"]) == (
        State.FAILED,
        411,
        "Task is aborted: stopped by request",
        233,
        "stopped",
    )
    rig.fake.listing([], volumes=["gv1"])
    rig.poller.poll()
    assert rig.bus.take() == [("finished", REMOVE_ID, "failed")]  # the stop's; vanishing adds none
    assert rig.publisher.tasks == {}


def test_a_stop_gluster_refuses_raises_4107_and_the_next_poll_republishes_the_real_state(rig: Rig) -> None:
    rig.fake.listing([_listed_rebalance()])
    rig.rebalance("in progress", 1)
    rig.poller.poll()
    rig.fake.answer(
        "volume rebalance gv1 stop --xml", failed_xml("Commit failed on localhost.", body=""), rc=1
    )
    rig.publisher.update(REBALANCE_ID, state=State.ABORTING)

    with pytest.raises(GlusterCommandFailed) as caught:
        rig.poller.stop_task(REBALANCE_ID)
    rig.poller.poll()

    assert caught.value.code == 4107
    assert "Commit failed on localhost." in caught.value.message
    assert rig.record(REBALANCE_ID).state is State.RUNNING


def test_revert_is_refused_with_code_100_in_vdsm_s_form(rig: Rig) -> None:
    with pytest.raises(RevertNotSupported) as caught:
        rig.poller.revert_task(REBALANCE_ID)

    assert caught.value.to_wire() == {
        "code": 100,
        "message": f"General Exception: revert is not supported for gluster tasks (task {REBALANCE_ID})",
    }


def test_a_task_whose_id_is_not_a_uuid_is_skipped_with_one_warning_and_the_others_published(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.fake.listing([Task("gv2", "Rebalance", "not-a-uuid", "in progress"), _listed_rebalance()])
    rig.rebalance("in progress", 1)

    with caplog.at_level(logging.WARNING, logger="bus_tasks.plugins.gluster"):
        rig.poller.poll()
        rig.poller.poll()

    assert set(rig.publisher.tasks) == {REBALANCE_ID}
    assert [r.getMessage() for r in caplog.records] == [
        "gluster task id 'not-a-uuid' of volume gv2 is not a UUID"
    ]
