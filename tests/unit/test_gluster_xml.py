"""Parsing the gluster CLI's XML: VDSM's real fixtures, glusterfs 10.3's own output, and bad output."""

from __future__ import annotations

import pytest
from support.gluster import FIXTURES, Node, failed_xml, migration_xml, tasks_xml

from bus_tasks.plugins.gluster.xml import (
    Counters,
    ListedTask,
    MigrationStatus,
    NodeStatus,
    OperationFailed,
    OutputError,
    parse_migration,
    parse_tasks,
)

NODE_ID = "883626f8-4d29-4d02-8c5d-c9f48c5b2445"
COMPLETED = Counters(
    files_scanned=278,
    files_moved=78,
    files_failed=0,
    files_skipped=0,
    total_size_moved=79872,
    runtime_s=10.2,
    status=3,
    status_str="completed",
)

# Recorded from glusterfs 10.3 on this machine: a rebalance just started (runtime "0.00", counters
# before <status>/<runtime>, unlike VDSM's fixture order).
REBALANCE_10_3 = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <volRebalance>
    <task-id>5aa70a11-b29b-427c-9300-847761eb6dcc</task-id>
    <op>3</op>
    <nodeCount>1</nodeCount>
    <node>
      <nodeName>localhost</nodeName>
      <id>2332500a-09f9-43b6-9d01-8dfab3a9b24f</id>
      <files>10</files>
      <size>163840</size>
      <lookups>300</lookups>
      <failures>0</failures>
      <skipped>0</skipped>
      <status>1</status>
      <statusStr>in progress</statusStr>
      <runtime>0.00</runtime>
    </node>
    <aggregate>
      <files>10</files>
      <size>163840</size>
      <lookups>300</lookups>
      <failures>0</failures>
      <skipped>0</skipped>
      <status>1</status>
      <statusStr>in progress</statusStr>
      <runtime>0.00</runtime>
    </aggregate>
  </volRebalance>
</cliOutput>
"""
# glusterfs 10.3, `volume rebalance VOL status --xml` with no rebalance: exit status 0.
REBALANCE_NOT_STARTED_10_3 = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>-1</opRet>
  <opErrno>30800</opErrno>
  <opErrstr>Rebalance not started for volume gvx.</opErrstr>
  <cliOp>volRebalance</cliOp>
  <output>Rebalance not started for volume gvx.</output>
</cliOutput>
"""


def test_the_tasks_fixture_lists_every_task_of_every_volume_with_its_remove_brick_bricks() -> None:
    listed = parse_tasks((FIXTURES / "glusterVolumeTasks.xml").read_text())

    assert listed == [
        ListedTask(
            "gv1",
            "Remove brick",
            "5e7fb5b7-1e23-415c-9b3f-e7e7fd896ea1",
            1,
            "completed",
            ("bricknode1:/gfs/b3",),
        ),
        ListedTask("gv1", "Rebalance", "1bea87af-d176-4044-b4a2-46724ab0f070", 1, "in progress", ()),
        ListedTask(
            "gv2",
            "Remove brick",
            "5e7fb5b7-1e23-415c-9b3f-e7e7fd896eae",
            1,
            "completed",
            ("bricknode1:/gfs/b3",),
        ),
    ]


def test_the_rebalance_fixture_gives_its_task_id_the_aggregate_and_every_node() -> None:
    status = parse_migration((FIXTURES / "glusterVolumeRebalanceStatus.xml").read_text())

    assert status == MigrationStatus(
        task_id="cffd9543-55dc-46ba-a0ac-825aba103948",
        aggregate=COMPLETED,
        nodes=(NodeStatus("localhost", NODE_ID, COMPLETED),),
    )


def test_the_remove_brick_fixture_has_no_task_id_and_the_same_counters() -> None:
    status = parse_migration((FIXTURES / "glusterVolumeRemoveBricksStatus.xml").read_text())

    assert status == MigrationStatus(
        task_id=None, aggregate=COMPLETED, nodes=(NodeStatus("localhost", NODE_ID, COMPLETED),)
    )


def test_glusterfs_10_3_output_with_runtime_last_parses_the_same_way() -> None:
    status = parse_migration(REBALANCE_10_3)

    running = Counters(300, 10, 0, 0, 163840, 0.0, 1, "in progress")
    assert status == MigrationStatus(
        task_id="5aa70a11-b29b-427c-9300-847761eb6dcc",
        aggregate=running,
        nodes=(NodeStatus("localhost", "2332500a-09f9-43b6-9d01-8dfab3a9b24f", running),),
    )


def test_a_volume_with_no_tasks_lists_nothing() -> None:
    assert parse_tasks(tasks_xml([], volumes=["gv3"])) == []


def test_several_nodes_are_each_listed_beside_the_aggregate() -> None:
    a = Node(name="host-a", node_id="11111111-0000-4000-8000-000000000001", files=5, lookups=9)
    b = Node(
        name="host-b",
        node_id="11111111-0000-4000-8000-000000000002",
        files=7,
        lookups=4,
        status_str="completed",
        status=3,
    )
    aggregate = Node(files=12, lookups=13, status=1)

    status = parse_migration(migration_xml("volRebalance", None, [a, b], aggregate))

    assert [(n.name, n.counters.files_moved, n.counters.status_str) for n in status.nodes] == [
        ("host-a", 5, "in progress"),
        ("host-b", 7, "completed"),
    ]
    assert (status.aggregate.files_moved, status.aggregate.files_scanned) == (12, 13)


def test_op_ret_not_zero_is_an_operation_failure_with_gluster_s_errstr_even_when_well_formed() -> None:
    with pytest.raises(OperationFailed) as caught:
        parse_migration(REBALANCE_NOT_STARTED_10_3)

    assert (caught.value.op_ret, caught.value.op_errno, caught.value.op_errstr) == (
        -1,
        30800,
        "Rebalance not started for volume gvx.",
    )


def test_a_failed_tasks_listing_is_an_operation_failure_too() -> None:
    with pytest.raises(OperationFailed, match="Another transaction is in progress"):
        parse_tasks(failed_xml("Another transaction is in progress", body=""))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Connection failed. Please check if gluster daemon is operational.\n", "not XML"),
        ("<cliOutput><opRet>0</opRet><volStatus><volumes>", "not XML"),
        ("", "not XML"),
        ("<html><body>no</body></html>", "not <cliOutput>"),
        ("<cliOutput><opErrno>0</opErrno></cliOutput>", "no <opRet>"),
        ("<cliOutput><opRet>zero</opRet></cliOutput>", "not an integer"),
        ("<cliOutput><opRet>0</opRet></cliOutput>", "no <volStatus/volumes>"),
    ],
)
def test_output_that_is_not_the_tasks_xml_is_an_output_error_saying_why(text: str, reason: str) -> None:
    with pytest.raises(OutputError, match=reason):
        parse_tasks(text)


def test_a_task_without_an_id_is_an_output_error_not_a_task_skipped_silently() -> None:
    text = tasks_xml([]).replace(
        "<volumes>",
        "<volumes><volume><volName>gv1</volName><tasks><task><type>Rebalance</type><statusStr>completed</statusStr></task></tasks></volume>",
    )

    with pytest.raises(OutputError, match="no <id> in <task>"):
        parse_tasks(text)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("<files>0</files>", "<files>many</files>", "<files> of <aggregate> is not an integer: 'many'"),
        ("<runtime>0.00</runtime>", "<runtime>soon</runtime>", "<runtime> of <aggregate> is not a number"),
        ("<runtime>0.00</runtime>", "<runtime>-3</runtime>", "is not a duration"),
        ("<lookups>0</lookups>", "", "no <lookups> in <aggregate>"),
    ],
)
def test_a_bad_counter_is_an_output_error_naming_it(field: str, value: str, reason: str) -> None:
    text = migration_xml("volRebalance", None, [], Node())
    head, _, aggregate = text.partition("<aggregate>")

    with pytest.raises(OutputError, match=reason):
        parse_migration(head + "<aggregate>" + aggregate.replace(field, value, 1))


def test_a_status_answer_without_a_migration_element_is_an_output_error() -> None:
    with pytest.raises(OutputError, match="no <volRebalance> or <volRemoveBrick>"):
        parse_migration(tasks_xml([]))
