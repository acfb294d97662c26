"""The processes of a soak: two replicas, churning subsystems, a simulator, the STOMP front door
and the clients, started through the ``bus-tasks`` CLI (or ``python -m soak.*``) with their logs
in files; and the chaos that kills and drops them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from support.faultproxy import FaultProxy

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0  # the machine is shared and loaded: a start may take a while
STOP_TIMEOUT_S = 60.0
REPLICAS = ("a", "b")
CHURNS = ("soak1", "soak2", "soak3")
SIMULATED = "simvdsm"
KILLED_REPLICA = "replica-b"  # the other replica and subsystems live through the whole run
KILLED_CHURN = "churn-soak3"


class ChildFailed(RuntimeError):
    """Raised when a process exits before it should, or does not get ready in time."""


class Child:
    """One process of the system, its output in a log file of its own (a file: nothing to drain)."""

    def __init__(self, role: str, incarnation: int, argv: Sequence[str], log_dir: Path, env: dict[str, str]):
        self.role = role
        self.incarnation = incarnation
        self.ended_on_purpose = False  # stopped or killed by the soak: its exit is no failure
        self.log_path = log_dir / f"{role}.{incarnation}.log"
        with self.log_path.open("wb") as out:
            self.popen = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def series(self) -> str:
        return f"{self.role}#{self.incarnation}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, pattern: str, *, timeout_s: float = READY_TIMEOUT_S) -> re.Match[str]:
        """The first match of ``pattern`` in the log, polled until ``timeout_s``.

        Raises:
            ChildFailed: when the process exits or the deadline passes first.
        """
        deadline = time.monotonic() + timeout_s
        compiled = re.compile(pattern)
        while True:
            found = compiled.search(self.log_text())
            if found:
                return found
            if self.popen.poll() is not None or time.monotonic() >= deadline:
                tail = "\n".join(self.log_text().splitlines()[-20:])
                raise ChildFailed(f"{self.series}: no {pattern!r} (exit {self.popen.poll()}):\n{tail}")
            time.sleep(0.2)  # polling a file under a deadline

    def signal(self, signum: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, *, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL and raise if it does not stop in time."""
        self.ended_on_purpose = True
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ChildFailed(f"{self.series} did not stop within {timeout_s:g}s") from None

    def kill(self) -> None:
        self.ended_on_purpose = True
        self.signal(signal.SIGKILL)
        self.popen.wait(30.0)


@dataclass
class System:
    """Every process of the soak, by role; restarts keep the role and count incarnations."""

    url: str  # through the fault proxy
    run_dir: Path
    proxy: FaultProxy
    children: dict[str, Child] = field(default_factory=dict)
    retired: list[Child] = field(default_factory=list)  # killed incarnations, for the table
    events: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, what the chaos did)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stomp_port: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, "BUS_TASKS_LOG_LEVEL": "INFO", **extra}

    def spawn(self, role: str, argv: Sequence[str], **env: str) -> Child:
        with self.lock:
            previous = self.children.get(role)
            child = Child(
                role, previous.incarnation + 1 if previous else 1, argv, self.run_dir, self.env(**env)
            )
            if previous is not None:
                self.retired.append(previous)
            self.children[role] = child
        return child

    def start_replica(self, name: str) -> Child:
        child = self.spawn(
            f"replica-{name}",
            [str(BIN / "bus-tasks"), "serve", "--broker", self.url, "--data-dir", str(self.run_dir / name)],
            BUS_TASKS_AGGREGATOR_NAME=name,
        )
        child.wait_for_line("aggregator ready")
        return child

    def start_churn(self, name: str) -> Child:
        argv = [sys.executable, "-m", "soak.churn", "--broker", self.url, "--subsystem", name]
        child = self.spawn(f"churn-{name}", [*argv, "--state", str(self.run_dir / name)])
        child.wait_for_line("churning as")
        return child

    def start_simulator(self) -> Child:
        return self.spawn(
            "simulate",
            [str(BIN / "bus-tasks"), "simulate", "--broker", self.url, "--subsystem", SIMULATED, "storage"],
        )  # fmt: skip

    def start_stomp(self) -> Child:
        child = self.spawn(
            "stomp", [str(BIN / "bus-tasks"), "stomp", "--broker", self.url, "--listen", "127.0.0.1:0"]
        )
        self.stomp_port = int(child.wait_for_line(r"stomp front door listening on [\d.]+:(\d+)").group(1))
        return child

    def start_clients(self) -> Child:
        argv = [sys.executable, "-m", "soak.clients", "--broker", self.url]
        return self.spawn(
            "clients",
            [*argv, "--stomp-port", str(self.stomp_port), "--out", str(self.run_dir / "clients.json")],
        )

    def start_all(self) -> None:
        for name in REPLICAS:
            self.start_replica(name)
        self.start_stomp()
        for name in CHURNS:
            self.start_churn(name)
        self.start_simulator()
        self.start_clients()

    def live(self) -> list[Child]:
        with self.lock:
            return list(self.children.values())

    def exited(self) -> list[str]:
        """The processes that exited on their own (each a failure of the soak). One the chaos
        killed is not among them, even before its next incarnation takes its role."""
        return [
            f"{c.series} exited {c.popen.returncode}"
            for c in self.live()
            if c.popen.poll() is not None and not c.ended_on_purpose
        ]

    def note(self, what: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), what))
        print(f"  chaos: {what}", flush=True)

    # -- chaos --------------------------------------------------------------------------

    def drop_connections(self) -> None:
        self.note(f"dropped {self.proxy.drop_all()} broker connections")

    def kill_replica(self) -> None:
        self.children[KILLED_REPLICA].kill()
        self.note(f"SIGKILL {KILLED_REPLICA}")
        self.start_replica(KILLED_REPLICA.removeprefix("replica-"))

    def kill_churn(self) -> None:
        self.children[KILLED_CHURN].kill()
        self.note(f"SIGKILL {KILLED_CHURN}")
        self.start_churn(KILLED_CHURN.removeprefix("churn-"))

    def chaos(self, stop: threading.Event, period_s: float, until: float) -> None:
        """Every ``period_s``: drop connections, kill the replica, drop, kill the subsystem ..."""
        actions: list[Callable[[], None]] = [
            self.drop_connections, self.kill_replica, self.drop_connections, self.kill_churn,
        ]  # fmt: skip
        turn = 0
        while not stop.wait(period_s) and time.monotonic() + period_s / 2 < until:
            actions[turn % len(actions)]()
            turn += 1

    def stop_all(self) -> None:
        """Stop whatever still runs, the front doors and callers first, the replicas last."""
        order = ["clients", "stomp", "simulate", *(f"churn-{n}" for n in CHURNS)]
        order += [f"replica-{n}" for n in REPLICAS]
        for role in order:
            child = self.children.get(role)
            if child is not None and child.popen.poll() is None:
                try:
                    child.stop()
                except ChildFailed as exc:
                    print(f"  {exc}", flush=True)
