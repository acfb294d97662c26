"""The gluster CLI runner: ``gluster --mode=script ... --xml`` with a deadline per call.

A call that fails in any way (cannot start, hangs, exits non-zero, prints no XML, ``opRet != 0``)
raises the :class:`GlusterError` subclass the caller names, with VDSM's code for that call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bus_tasks.plugins.gluster.errors import (
    GlusterCommandFailed,
    GlusterError,
    GlusterRebalanceStatusFailed,
    GlusterRemoveBrickStatusFailed,
    GlusterTasksListFailed,
)
from bus_tasks.plugins.gluster.xml import (
    ListedTask,
    MigrationStatus,
    OperationFailed,
    OutputError,
    parse_migration,
    parse_tasks,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BINARY = "gluster"
# The gluster CLI's own connection timeout; VDSM sets none of its own.
DEFAULT_TIMEOUT_S = 120.0
# How long a killed call's pipes may take to close.
_REAP_S = 5.0
# How often a running call looks at the stop event.
_STOP_CHECK_S = 0.2


@dataclass(frozen=True)
class Completed:
    rc: int
    stdout: str
    stderr: str


class GlusterCli:
    """Runs the gluster CLI; thread-safe (each call is a process of its own)."""

    def __init__(
        self,
        binary: str = DEFAULT_BINARY,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        stop: threading.Event | None = None,
    ) -> None:
        """Args:
        stop: once set, a running call is killed at once (the process is stopping).
        """
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be more than 0, not {timeout_s}")
        self.binary = binary
        self.timeout_s = timeout_s
        self.stop = stop

    def volume_tasks(self) -> list[ListedTask]:
        """Every task of every started volume (``volume status all tasks``)."""
        return self._xml(["volume", "status", "all", "tasks"], parse_tasks, GlusterTasksListFailed)

    def rebalance_status(self, volume: str) -> MigrationStatus:
        return self._xml(
            ["volume", "rebalance", volume, "status"], parse_migration, GlusterRebalanceStatusFailed
        )

    def remove_brick_status(self, volume: str, bricks: Sequence[str]) -> MigrationStatus:
        args = ["volume", "remove-brick", volume, *bricks, "status"]
        return self._xml(args, parse_migration, GlusterRemoveBrickStatusFailed)

    def rebalance_stop(self, volume: str) -> MigrationStatus:
        """Stop a rebalance; the answer holds its final counters."""
        return self._xml(["volume", "rebalance", volume, "stop"], parse_migration, GlusterCommandFailed)

    def remove_brick_stop(self, volume: str, bricks: Sequence[str]) -> MigrationStatus:
        """Stop a remove-brick (the bricks stay in the volume); the answer holds its final counters."""
        args = ["volume", "remove-brick", volume, *bricks, "stop"]
        return self._xml(args, parse_migration, GlusterCommandFailed)

    def _xml(self, args: list[str], parse: Callable[[str], T], error: type[GlusterError]) -> T:
        done = self.run([*args, "--xml"], error)
        try:
            return parse(done.stdout)
        except OperationFailed as exc:
            raise error(exc.op_errstr or str(exc), rc=exc.op_ret) from None
        except OutputError as exc:
            # glusterd down: "Connection failed. ..." on stdout, no XML, exit status 1.
            said = " ".join(f"{done.stdout} {done.stderr}".split())
            raise error(said if done.rc and said else str(exc), rc=done.rc) from None

    def run(self, args: Sequence[str], error: type[GlusterError] = GlusterCommandFailed) -> Completed:
        """``gluster --mode=script ARGS``, killed (its whole process group) at ``timeout_s``."""
        argv = [self.binary, "--mode=script", *args]
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,  # so that a kill reaches whatever it started
            )
        except OSError as exc:
            raise error(f"cannot run {self.binary}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                remaining_s = max(0.0, deadline - time.monotonic())
                stdout, stderr = process.communicate(timeout=min(_STOP_CHECK_S, remaining_s))
                break
            except subprocess.TimeoutExpired:
                if self.stop is not None and self.stop.is_set():
                    _kill(process)
                    raise error(f"{' '.join(argv)} killed: the plugin is stopping") from None
                if time.monotonic() >= deadline:
                    _kill(process)
                    raise error(
                        f"{' '.join(argv)} did not answer within {self.timeout_s:g}s (killed)"
                    ) from None
        log.debug("%s: rc=%d", " ".join(argv), process.returncode)
        return Completed(process.returncode, stdout, stderr)


def _kill(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.communicate(timeout=_REAP_S)
    except subprocess.TimeoutExpired:  # a grandchild left the group and holds the pipes
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        process.wait(_REAP_S)
