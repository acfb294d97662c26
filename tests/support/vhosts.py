"""Fresh RabbitMQ vhosts for tests, made and deleted in batches.

Every ``rabbitmqctl`` call boots an Erlang VM and connects to the node: 1-5 s of wall time on this
machine, about half a second of CPU. A test that took a vhost of its own (three calls), or emptied
a shared one after it (a ``list_queues`` and a delete per queue), paid that every time. A
:class:`VhostPool` makes its vhosts ``BATCH`` at a time with one ``import_definitions`` (each
vhost with the given user's full permissions) and deletes the used ones, ``BATCH`` at a time, with
one ``eval`` of ``rabbit_vhost:delete/2``: each test gets a vhost nobody used before, so nothing
of an earlier test is left in it, for a small share of one call.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable

BATCH = 20
IMPORT_TIMEOUT_S = 60.0
ACTING_USER = "bus_tasks tests"

Ctl = Callable[..., str]  # rabbitmqctl ARGS against one node; its stdout


class VhostPool:
    """Vhosts ``<prefix>_<uuid>_<n>`` on the node ``ctl`` speaks to, for ``user``."""

    def __init__(self, ctl: Ctl, prefix: str, *, user: str = "guest", batch: int = BATCH) -> None:
        self._ctl = ctl
        self._prefix = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self._user = user
        self._batch = batch
        self._made = 0
        self._free: list[str] = []
        self._used: list[str] = []

    def take(self) -> str:
        """A vhost no test used before (made with the next batch when none is left)."""
        if not self._free:
            self._make()
        return self._free.pop(0)

    def done(self, vhost: str) -> None:
        """``vhost``'s test ended: it is deleted with the next full batch (or at :meth:`close`)."""
        self._used.append(vhost)
        if len(self._used) >= self._batch:
            self._delete(self._used)
            self._used = []

    def close(self) -> None:
        """Delete every vhost made, used or not."""
        left, self._used, self._free = self._used + self._free, [], []
        if left:
            self._delete(left)

    def _make(self) -> None:
        names = [f"{self._prefix}_{self._made + i}" for i in range(self._batch)]
        self._made += self._batch
        every = {"configure": ".*", "write": ".*", "read": ".*"}
        definitions = {
            "vhosts": [{"name": name} for name in names],
            "permissions": [{"user": self._user, "vhost": name, **every} for name in names],
        }
        # The node reads the file itself, as its own user: one readable by others, removed after.
        with tempfile.NamedTemporaryFile("w", prefix="bt-vhosts-", suffix=".json", encoding="utf-8") as file:
            json.dump(definitions, file)
            file.flush()
            os.chmod(file.name, 0o644)
            self._ctl("import_definitions", file.name)
            # The import runs on in the node after the call (RabbitMQ 3.10): wait for its vhosts.
            deadline = time.monotonic() + IMPORT_TIMEOUT_S
            while missing := [name for name in names if name not in self._listed()]:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"import_definitions made no vhost {missing[0]!r} in {IMPORT_TIMEOUT_S} s"
                    )
                time.sleep(0.2)  # polling the node, within the deadline
        self._free += names

    def _listed(self) -> set[str]:
        return set(self._ctl("list_vhosts", "--no-table-headers").split())

    def _delete(self, vhosts: list[str]) -> None:
        binaries = ", ".join(f'<<"{name}">>' for name in vhosts)
        try:
            said = self._ctl("eval", f'[rabbit_vhost:delete(V, <<"{ACTING_USER}">>) || V <- [{binaries}]].')
        except subprocess.CalledProcessError:
            said = ""
        if "".join(said.split()) != "[" + ",".join(["ok"] * len(vhosts)) + "]":
            listed = self._listed()
            for name in vhosts:  # what is left, each on its own as the CLI deletes it
                if name in listed:
                    self._ctl("delete_vhost", name)
