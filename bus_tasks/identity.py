"""Who may speak for whom on the bus (SPEC 15): one pure decision, tested as a table.

With ``identity = "broker"`` a receiver believes a message only when the AMQP ``user_id`` that
the broker validated against the sender's login may say it: a subsystem's identities speak for
that subsystem (its events, announces, heartbeats and control replies), aggregators speak as
aggregators (``cleared`` of any task, presence, replies, the change feed, control commands, and
everything of the test subsystem). With ``identity = "off"`` everything is believed. No I/O here;
the receivers (ingest, presence, the control relay, clients) ask :func:`refusal`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

IdentityMode = Literal["off", "broker"]
IDENTITY_MODES: tuple[IdentityMode, ...] = ("off", "broker")

# A broker user name as bus_tasks accepts one in its settings: printable ASCII (a certificate's
# CN, or its whole DN), no leading or trailing blank.
IDENTITY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"

_SHOWN_CHARS = 80  # of a user_id quoted in a reason: the memory transport vouches for nothing


class Speech(StrEnum):
    """What a message says, as its receiver reads it."""

    EVENT = "event"  # created, updated, finished of a task of the subsystem
    CLEARED = "cleared"  # its owner dropped it, or an aggregator cleared or expired it
    ANNOUNCED = "announce"  # the end of a subsystem's resync: its complete set of live tasks
    HEARTBEAT = "heartbeat"  # the subsystem is alive (or stopped)
    CONTROL_REPLY = "control reply"  # the subsystem answers a command for its task
    CONTROL_COMMAND = "control command"  # an aggregator tells a subsystem (stop, clear, resync)
    PRESENCE = "presence beat"  # an aggregator is serving
    REPLY = "reply"  # an aggregator answers a client's call
    CHANGE = "change"  # an aggregator's change feed (watch)


# What a subsystem's own identities may say for it; the rest only aggregators say.
_SUBSYSTEM_SPEECH = frozenset(
    {Speech.EVENT, Speech.CLEARED, Speech.ANNOUNCED, Speech.HEARTBEAT, Speech.CONTROL_REPLY}
)


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Whom a receiver believes.

    - ``mode``: ``"off"`` believes everything; ``"broker"`` only what the broker vouches for.
    - ``publishers``: subsystem -> identities that may publish for it besides the identity named
      after it.
    - ``aggregators``: the identities of aggregators.
    - ``test_subsystem``: the subsystem of test tasks (``bus-tasks inject``), owned by the
      aggregators; ``""`` for none.
    """

    mode: IdentityMode = "off"
    publishers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    aggregators: frozenset[str] = frozenset()
    test_subsystem: str = ""

    @classmethod
    def of(
        cls,
        mode: IdentityMode,
        *,
        publishers: Mapping[str, Iterable[str]] | None = None,
        aggregators: Iterable[str] = (),
        test_subsystem: str = "",
    ) -> TrustPolicy:
        """A policy from plain settings values (lists become sets)."""
        return cls(
            mode=mode,
            publishers={name: frozenset(ids) for name, ids in (publishers or {}).items()},
            aggregators=frozenset(aggregators),
            test_subsystem=test_subsystem,
        )

    def speakers(self, subsystem: str) -> frozenset[str]:
        """The identities that may publish for ``subsystem`` (aggregators aside)."""
        return frozenset({subsystem}) | self.publishers.get(subsystem, frozenset())


OFF = TrustPolicy()


def refusal(policy: TrustPolicy, speech: Speech, subsystem: str | None, user_id: str | None) -> str | None:
    """None when ``user_id`` may say ``speech`` (for ``subsystem``); else why not, as the
    dead letter's reason (``identity: ...``).

    ``subsystem`` is the one the body names (events, announces, heartbeats, control replies and
    commands); None for what only aggregators say.
    """
    if policy.mode == "off":
        return None
    # Every event is asked: the believed cases first, without building anything (not even the
    # set of speakers: the identity named after the subsystem, then the others it may have).
    if user_id:
        if user_id in policy.aggregators and (
            speech not in _SUBSYSTEM_SPEECH or speech is Speech.CLEARED or subsystem == policy.test_subsystem
        ):
            return None
        if (
            speech in _SUBSYSTEM_SPEECH
            and subsystem is not None
            and (user_id == subsystem or user_id in policy.publishers.get(subsystem, ()))
        ):
            return None
    about = f"{speech.value} of {subsystem}" if subsystem is not None else speech.value
    if not user_id:
        return f"identity: no user_id on a message ({about}): nobody vouches for its sender"
    shown = user_id if len(user_id) <= _SHOWN_CHARS else f"{user_id[:_SHOWN_CHARS]}..."
    if speech in _SUBSYSTEM_SPEECH:
        return f"identity: {shown!r} may not speak for {subsystem} ({speech.value})"
    return f"identity: {shown!r} is not an aggregator ({about})"


def off_warning(mode: IdentityMode, broker_scheme: str) -> str | None:
    """The one line a process logs at start when nothing checks who publishes; None otherwise."""
    if mode != "off" or broker_scheme.lower() == "memory":
        return None
    return (
        'identity = "off": any user of the broker can publish as any subsystem, clear any task and '
        'answer for any aggregator (set identity = "broker": see docs/security.md)'
    )
