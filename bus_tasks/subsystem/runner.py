"""A subsystem process, written once: the simulator, every plugin and the tests run it.

Two connections: the publisher's (confirmed) and the control one, on which the subsystem name is
claimed and control commands are answered, with heartbeats, on a thread of their own. The name
is claimed when the runner opens, before the process does any work or publishes anything: a
second process of the name is refused there and then. The first announce (every live task and
the marker listing them) waits until the process knows its tasks: an announce of a half-known
set would bury the rest. The process's own work runs in turns until the stop; closing says
goodbye (the last heartbeat), gives up the name and closes both connections.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from bus_tasks.errors import ShutdownRequested, SubsystemTaken
from bus_tasks.identity import OFF, TrustPolicy
from bus_tasks.subsystem.publisher import DEFAULT_HEARTBEAT_S, TaskPublisher
from bus_tasks.transport import Bus

log = logging.getLogger(__name__)

# How long a close waits for the control thread's goodbye.
CLOSE_TIMEOUT_S = 10.0


class Connect(Protocol):
    """A new broker connection (not connected yet) of the process's deployment: the one place
    a process builds them (``workers/wiring.py`` in production, the broker fixtures in tests)."""

    def __call__(self, *, confirm_publish: bool = False, connect_retries: int | None = None) -> Bus: ...


class SubsystemRunner:
    """Runs one subsystem: ``with SubsystemRunner.open(name, connect) as runner:`` (the name
    claimed), then :meth:`announce` once its tasks are known, and :meth:`run` the work until the
    stop. A runner built on a publisher directly claims with :meth:`claim` or :meth:`serve_control`.

    ``stop``: the process's stop (a signal sets it); the connections ``connect`` makes should
    see it too, so that waiting for the broker ends with it.
    """

    def __init__(
        self, publisher: TaskPublisher, connect: Connect, *, stop: threading.Event | None = None
    ) -> None:
        self.publisher = publisher
        self.stop = stop if stop is not None else threading.Event()
        self._connect = connect
        self._control: Bus | None = None  # the control connection this runner opened
        self._thread: threading.Thread | None = None
        self.taken: SubsystemTaken | None = None  # the claim of serve_control's thread was refused

    @classmethod
    def open(
        cls,
        subsystem: str,
        connect: Connect,
        *,
        stop: threading.Event | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        trust: TrustPolicy = OFF,
    ) -> SubsystemRunner:
        """A runner with a publisher of ``subsystem`` on a confirmed connection of its own, the
        name claimed (nothing announced yet), control served with heartbeats on a thread;
        ``trust``: whose control commands it carries out (SPEC 15).

        Raises:
            SubsystemTaken: when a live process owns the name (nothing was published then).
            ShutdownRequested: when the stop came while the broker was away.
        """
        publisher = TaskPublisher(connect(confirm_publish=True), subsystem, heartbeat_s=heartbeat_s)
        publisher.control.trust = trust
        runner = cls(publisher, connect, stop=stop)
        try:
            runner.claim(announce=False)
        except BaseException:
            publisher.close()
            raise
        return runner

    @property
    def serving(self) -> bool:
        """Control commands are answered (from :meth:`claim` or :meth:`serve_control` on)."""
        return self._thread is not None

    @property
    def announced(self) -> bool:
        """The live tasks were announced: resyncs announce them, commands are carried out."""
        return self.publisher.control.announced.is_set()

    def claim(self, *, announce: bool = True) -> None:
        """Claim the subsystem name here and now, then answer control commands and send
        heartbeats on a thread until the stop. ``announce``: announce every live task at once;
        without, :meth:`announce` follows (stop, revert and retag are refused until then).

        Raises:
            SubsystemTaken: when a live process owns the name (nothing is served then).
            ShutdownRequested: when the stop came while the broker was away.
        """
        connection = self._connect()
        try:
            self.publisher.control.listen(connection, announce=announce)
        except BaseException:
            connection.close()
            raise
        self._control = connection
        self._serve(connection)

    def announce(self) -> int:
        """Announce every live task (the process knows them all now); returns how many.

        Raises:
            BrokerUnavailable: when the announce cannot be published (call it again).
        """
        announced = self.publisher.control.announce()
        log.info("%s listening for control commands; announced %d tasks", self.publisher.subsystem, announced)
        return announced

    def serve_control(self, connection: Bus | None = None) -> None:
        """Answer control commands and send heartbeats on a thread until the stop; the name is
        claimed there, unless ``connection`` (the caller's, left open) already claimed it. A
        refused claim sets the stop and :attr:`taken`."""
        if connection is None:
            connection = self._control = self._connect()
        self._serve(connection)

    def run(self, turn: Callable[[], object], interval_s: float) -> None:
        """Call ``turn`` every ``interval_s`` until the stop (a stop while the broker is away
        ends it too)."""
        try:
            while not self.stop.is_set():
                turn()
                self.stop.wait(interval_s)
        except ShutdownRequested as exc:
            log.warning("%s", exc)  # the broker was away when the stop came

    def stop_serving(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Set the stop, wait for the control thread's goodbye, close the control connection
        this runner opened (the name is free again); the publisher stays open. False when the
        control thread was still running at ``timeout_s``."""
        self.stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning(
                    "%s: the control thread did not stop within %gs", self.publisher.subsystem, timeout_s
                )
                return False  # it still uses its connection: the process exits anyway
        control, self._control = self._control, None
        if control is not None:
            control.close()
        return True

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """:meth:`stop_serving`, then close the publisher (its events flushed, bounded); False
        when the control thread was still running at ``timeout_s``."""
        stopped = self.stop_serving(timeout_s)
        self.publisher.close()
        return stopped

    def __enter__(self) -> SubsystemRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self, connection: Bus) -> None:
        self._thread = threading.Thread(
            target=self._serve_until_stop, args=(connection,), name="control", daemon=True
        )
        self._thread.start()

    def _serve_until_stop(self, connection: Bus) -> None:
        try:
            self.publisher.serve_control(connection, self.stop)
        except SubsystemTaken as exc:
            self.taken = exc
            self.stop.set()
