"""SPEC's rules (sections 3 and 4) written out again by hand: tests check the code against these,
never against what the code itself says, so that the model and the tests check each other."""

from __future__ import annotations

SPEC_SUBSYSTEM = r"[a-z0-9][a-z0-9_.-]{0,63}"
SPEC_TAG = r"[A-Za-z0-9_.:/-]{1,64}"
SPEC_MAX_TAGS = 32
SPEC_EVENTS = ["created", "updated", "finished", "cleared"]
# internal state -> (taskState, taskResult), SPEC 3's table.
SPEC_LEGACY_STATE = {
    "unknown": ("unknown", ""),
    "init": ("init", ""),
    "preparing": ("running", ""),
    "blocked": ("running", ""),
    "acquiring": ("running", ""),
    "queued": ("running", ""),
    "running": ("running", ""),
    "finished": ("finished", "success"),
    "aborting": ("aborting", ""),
    "raborting": ("aborting", ""),
    "waitrecover": ("cleaning", ""),
    "recovering": ("cleaning", ""),
    "racquiring": ("cleaning", ""),
    "recovered": ("finished", "cleanSuccess"),
    "failed": ("finished", "cleanFailure"),
}
SPEC_STATES = list(SPEC_LEGACY_STATE)
