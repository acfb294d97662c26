"""Start bus_tasks processes for end-to-end tests and watch their log lines, with deadlines."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent
SUBSYSTEM_SCRIPT = Path(__file__).parent / "procs" / "subsystem.py"

# The one line each that a service logs at start while identity or authorization is off
# (SPEC 15, 16): tests that count a service's lines count the others.
START_WARNINGS = ('identity = "off"', 'authorization = "off"')


def without_start_warnings(lines: list[str]) -> list[str]:
    """``lines`` but the start-up warnings of :data:`START_WARNINGS`."""
    return [line for line in lines if not any(warning in line for warning in START_WARNINGS)]


class Process:
    """A child process whose stderr lines are collected by a thread (so its pipe never fills)."""

    def __init__(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        """Start ``argv``; ``env`` is the whole environment (default: this process's)."""
        self.argv = list(argv)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env if env is not None else dict(os.environ),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        with self.popen.stderr:
            for line in self.popen.stderr:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, text: str, *, timeout_s: float, after: int = 0) -> int:
        """Index of the first stderr line (from ``after`` on) containing ``text``.

        Raises:
            AssertionError: when the process exits or ``timeout_s`` passes first.
        """

        def found() -> int | None:
            for index in range(after, len(self.lines)):
                if text in self.lines[index]:
                    return index
            return None

        with self._changed:
            ok = self._changed.wait_for(
                lambda: found() is not None or self.popen.poll() is not None, timeout=timeout_s
            )
            index = found()
        if index is None:
            raise AssertionError(
                f"{text!r} not logged by {self.argv[:3]} (ok={ok}, exit={self.popen.poll()}):\n"
                + "\n".join(self.lines[-30:])
            )
        return index

    def wait_for_http(self, *, timeout_s: float) -> str:
        """The base URL (``http://127.0.0.1:PORT``) its HTTP front door logged it serves on."""
        line = self.lines[self.wait_for_line("http serving on http://", timeout_s=timeout_s)]
        match = re.search(r"http serving on (http://127\.0\.0\.1:\d+)$", line)
        assert match is not None, line
        return match.group(1)

    def terminate(self, *, timeout_s: float = 20.0) -> int:
        """SIGTERM, then the exit status (SIGKILL and fail if it does not stop in time)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            status = self.popen.wait(timeout_s)
            self._reader.join(timeout_s)
            return status
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv[:3]} did not stop within {timeout_s:g}s") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10.0)
        self._reader.join(10.0)

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


def start_serve(broker_url: str, data_dir: Path, *, timeout_s: float = 30.0, **env: str) -> Process:
    """``bus-tasks serve`` as a separate process, once it logged its ready line."""
    process = Process(
        [str(BIN / "bus-tasks"), "serve", "--broker", broker_url, "--data-dir", str(data_dir)],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", **env},
    )
    process.wait_for_line("aggregator ready", timeout_s=timeout_s)
    return process


def start_subsystem(broker_url: str, subsystem: str, *args: str) -> Process:
    """The test subsystem process of tests/procs/subsystem.py."""
    return Process(
        [sys.executable, str(SUBSYSTEM_SCRIPT), "--broker", broker_url, "--subsystem", subsystem, *args]
    )
