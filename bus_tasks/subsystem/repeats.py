"""The control calls a subsystem carried out lately, by their callers' call keys (SPEC 17).

A caller whose reply went with a broker node sends its stop, revert or retag again, under the
same call key; the owner answers the repeat as it answered the first, and does not stop or
revert the task a second time. Only what was carried out is remembered: a call that failed is
judged again when repeated (it changed nothing). No I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# A caller repeats a call within its own deadline (seconds to a minute); these bound the memory
# whatever the rate of calls.
MAX_REMEMBERED, REMEMBERED_FOR_S = 4096, 600.0


class Answered:
    """Recent answers by (call key, command, task): bounded in number and in age."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_REMEMBERED,
        ttl_s: float = REMEMBERED_FOR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._answers: OrderedDict[tuple[str, str, str], tuple[float, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str, command: str, task_id: str) -> Any | None:
        """The answer given to the call ``key`` (a ``command`` of ``task_id``); None: not given."""
        self._forget_old()
        found = self._answers.get((key, command, task_id))
        return None if found is None else found[1]

    def remember(self, key: str, command: str, task_id: str, result: Any) -> None:
        """The call ``key`` was carried out and answered ``result`` (never None)."""
        self._answers[key, command, task_id] = (self._clock(), result)
        self._answers.move_to_end((key, command, task_id))
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)
        self._forget_old()

    def _forget_old(self) -> None:
        answers, oldest = self._answers, self._clock() - self.ttl_s
        while answers and next(iter(answers.values()))[0] <= oldest:
            answers.popitem(last=False)
