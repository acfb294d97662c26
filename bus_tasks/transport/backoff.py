"""Reconnect back-off and its log budget, as a pure state machine (no I/O, no sleeping).

One :class:`Backoff` per broker link counts the consecutive failed attempts of an outage, says
when the next attempt is due (0.1 s doubling to a cap), and which failures deserve a log line:
the first, then one each time the attempt count doubles, and at least one every ``quiet_s``.
An outage of an hour costs about 130 lines, not one per attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_DELAY_S = 0.1
QUIET_S = 30.0


@dataclass(slots=True)
class Backoff:
    """Consecutive failures of one link since its last success, in ``time.monotonic()`` seconds."""

    max_s: float = 5.0
    first_s: float = FIRST_DELAY_S
    quiet_s: float = QUIET_S
    failures: int = 0
    delay_s: float = 0.0  # the wait before the next attempt, once one failed
    next_at: float = 0.0  # when the next attempt is due
    started_at: float = 0.0  # the first failure of this outage
    _logged_at: float = 0.0
    _log_at_failure: int = 1  # the next power of two of the attempt count worth a line

    def failed(self, now: float) -> bool:
        """Count a failed attempt made at ``now``; True when it deserves a log line."""
        if self.failures == 0:
            self.started_at = now
            self.delay_s = self.first_s
        else:
            self.delay_s = min(self.delay_s * 2, self.max_s)
        self.failures += 1
        self.next_at = now + min(self.delay_s, self.max_s)
        if self.failures >= self._log_at_failure or now - self._logged_at >= self.quiet_s:
            while self._log_at_failure <= self.failures:
                self._log_at_failure *= 2
            self._logged_at = now
            return True
        return False

    def succeeded(self) -> int:
        """The link works again; returns how many attempts had failed before (0: no outage)."""
        failures = self.failures
        self.failures = 0
        self.delay_s = 0.0
        self.next_at = 0.0
        self._log_at_failure = 1
        return failures

    def wait_s(self, now: float) -> float:
        """Seconds from ``now`` until the next attempt is due (0 when it is)."""
        return max(self.next_at - now, 0.0)

    def exhausted(self, retries: int | None) -> bool:
        """True when more than ``retries`` attempts in a row failed (never with ``None``)."""
        return retries is not None and self.failures > retries

    def outage_s(self, now: float) -> float:
        """How long the link has been failing, at ``now``."""
        return now - self.started_at if self.failures else 0.0
