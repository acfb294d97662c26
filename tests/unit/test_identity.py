"""Who may speak for whom (SPEC 15): the pure decision as a table, and the start-up warning."""

from __future__ import annotations

import pytest

from bus_tasks.identity import OFF, Speech, TrustPolicy, off_warning, refusal

POLICY = TrustPolicy.of(
    "broker",
    publishers={"gluster": ["gluster-node1", "gluster-node2"]},
    aggregators=["agg1", "agg2"],
    test_subsystem="test",
)

SUBSYSTEM_SPEECH = [Speech.EVENT, Speech.ANNOUNCED, Speech.HEARTBEAT, Speech.CONTROL_REPLY]
AGGREGATOR_SPEECH = [Speech.PRESENCE, Speech.REPLY, Speech.CHANGE]

ALLOWED = [
    # A subsystem speaks for itself, in every way a subsystem speaks.
    *[(speech, "vdsm", "vdsm") for speech in [*SUBSYSTEM_SPEECH, Speech.CLEARED]],
    # ... and so do the identities `publishers` adds for it, beside its own.
    *[(speech, "gluster", "gluster-node2") for speech in [*SUBSYSTEM_SPEECH, Speech.CLEARED]],
    (Speech.EVENT, "gluster", "gluster"),
    # Aggregators clear and expire any task, and own the test subsystem's tasks.
    (Speech.CLEARED, "vdsm", "agg1"),
    (Speech.CLEARED, "gluster", "agg2"),
    *[(speech, "test", "agg1") for speech in SUBSYSTEM_SPEECH],
    # What only aggregators say.
    *[(speech, None, "agg2") for speech in AGGREGATOR_SPEECH],
    (Speech.CONTROL_COMMAND, "vdsm", "agg1"),
]

REFUSED = [
    # Another subsystem, for every kind of speech of a subsystem.
    *[
        (speech, "vdsm", "gluster", "identity: 'gluster' may not speak for vdsm (" + speech.value + ")")
        for speech in [*SUBSYSTEM_SPEECH, Speech.CLEARED]
    ],
    # `publishers` of one subsystem add nothing for another.
    (Speech.EVENT, "vdsm", "gluster-node1", "identity: 'gluster-node1' may not speak for vdsm (event)"),
    # An aggregator does not publish a subsystem's events, heartbeats or answers (test aside).
    (Speech.EVENT, "vdsm", "agg1", "identity: 'agg1' may not speak for vdsm (event)"),
    (Speech.HEARTBEAT, "vdsm", "agg1", "identity: 'agg1' may not speak for vdsm (heartbeat)"),
    (Speech.CONTROL_REPLY, "gluster", "agg2", "identity: 'agg2' may not speak for gluster (control reply)"),
    # Test tasks are the aggregators': not anyone's who claims the body names them.
    (Speech.EVENT, "test", "vdsm", "identity: 'vdsm' may not speak for test (event)"),
    # Only aggregators answer clients, beat as aggregators, feed watchers, command subsystems.
    (Speech.REPLY, None, "vdsm", "identity: 'vdsm' is not an aggregator (reply)"),
    (Speech.PRESENCE, None, "reader1", "identity: 'reader1' is not an aggregator (presence beat)"),
    (Speech.CHANGE, None, "gluster", "identity: 'gluster' is not an aggregator (change)"),
    (
        Speech.CONTROL_COMMAND,
        "vdsm",
        "gluster",
        "identity: 'gluster' is not an aggregator (control command of vdsm)",
    ),
    # The subsystem itself does not command itself either: commands come from aggregators.
    (
        Speech.CONTROL_COMMAND,
        "vdsm",
        "vdsm",
        "identity: 'vdsm' is not an aggregator (control command of vdsm)",
    ),
    # No user_id: nobody vouches for the sender, whoever the body names.
    (
        Speech.EVENT,
        "vdsm",
        None,
        "identity: no user_id on a message (event of vdsm): nobody vouches for its sender",
    ),
    (
        Speech.EVENT,
        "vdsm",
        "",
        "identity: no user_id on a message (event of vdsm): nobody vouches for its sender",
    ),
    (Speech.REPLY, None, None, "identity: no user_id on a message (reply): nobody vouches for its sender"),
    # A subsystem speech that names no subsystem cannot be anyone's.
    (Speech.EVENT, None, "vdsm", "identity: 'vdsm' may not speak for None (event)"),
]


@pytest.mark.parametrize(("speech", "subsystem", "user_id"), ALLOWED)
def test_refusal_allows_who_may_speak(speech: Speech, subsystem: str | None, user_id: str) -> None:
    assert refusal(POLICY, speech, subsystem, user_id) is None


@pytest.mark.parametrize(("speech", "subsystem", "user_id", "reason"), REFUSED)
def test_refusal_names_why_the_others_may_not(
    speech: Speech, subsystem: str | None, user_id: str | None, reason: str
) -> None:
    assert refusal(POLICY, speech, subsystem, user_id) == reason


@pytest.mark.parametrize(("speech", "subsystem", "user_id", "reason"), REFUSED)
def test_refusal_believes_everyone_when_identity_is_off(
    speech: Speech, subsystem: str | None, user_id: str | None, reason: str
) -> None:
    assert refusal(OFF, speech, subsystem, user_id) is None


def test_refusal_without_a_test_subsystem_gives_aggregators_no_subsystem_to_speak_for() -> None:
    policy = TrustPolicy.of("broker", aggregators=["agg1"], test_subsystem="")
    assert refusal(policy, Speech.EVENT, "test", "agg1") == "identity: 'agg1' may not speak for test (event)"
    assert refusal(policy, Speech.CLEARED, "test", "agg1") is None


def test_refusal_quotes_at_most_80_characters_of_a_user_id() -> None:
    long_id = "x" * 300
    assert (
        refusal(POLICY, Speech.REPLY, None, long_id)
        == f"identity: '{'x' * 80}...' is not an aggregator (reply)"
    )


def test_policy_speakers_are_the_subsystem_itself_and_its_publishers() -> None:
    assert POLICY.speakers("gluster") == {"gluster", "gluster-node1", "gluster-node2"}
    assert POLICY.speakers("vdsm") == {"vdsm"}


@pytest.mark.parametrize(
    ("mode", "scheme", "warns"),
    [
        ("off", "amqp", True),
        ("off", "amqps", True),
        ("off", "redis", True),
        ("off", "MEMORY", False),
        ("off", "memory", False),
        ("broker", "amqps", False),
        ("broker", "memory", False),
    ],
)
def test_off_warning_is_one_line_on_a_shared_broker_only(mode: str, scheme: str, warns: bool) -> None:
    line = off_warning(mode, scheme)  # type: ignore[arg-type]
    if warns:
        assert line is not None
        assert "\n" not in line
        assert line.startswith('identity = "off": any user of the broker can publish as any subsystem')
    else:
        assert line is None
