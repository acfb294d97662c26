"""The STOMP front door's one runner: ``bus-tasks stomp`` awaits :meth:`RunningFrontDoor.serve` in
its main loop; tests and benchmarks run the same coroutine on a thread and loop of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from typing import Any

from bus_tasks.frontdoors.bridge import RpcBridge
from bus_tasks.frontdoors.stomp.server import StompFrontDoor, StompLimits
from bus_tasks.identity import OFF, TrustPolicy
from bus_tasks.transport import Bus

log = logging.getLogger(__name__)

# How long a stop that came while the broker was being reached waits for that attempt to give up.
ABANDON_START_S = 10.0


class RunningFrontDoor:
    """A STOMP front door over ``connection`` (the loop that serves it owns it).

    ``with RunningFrontDoor(connection, timeout_s=...) as door:`` serves on ``door.port`` in a
    thread; ``await door.serve(stopping)`` serves in the running loop until ``stopping`` is set.
    """

    def __init__(
        self,
        connection: Bus,
        *,
        timeout_s: float,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        limits: StompLimits | None = None,
        trust: TrustPolicy = OFF,
        start_timeout_s: float | None = 30.0,
    ) -> None:
        """Args:
        trust: whose replies the bridge believes (SPEC 15: with identity "broker", aggregators').
        start_timeout_s: how long reaching the broker may take (None: as long as the
            connection's own retries, which a stop set on it ends).
        """
        self.door = StompFrontDoor(timeout_s=timeout_s, ssl_context=ssl_context, limits=limits)
        self.bridge = RpcBridge(connection, self.door.on_reply, trust=trust, door="stomp")
        self.host = host
        self.port = port
        self._start_timeout_s = start_timeout_s
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> threading.Event:
        """Set once it listens (its ready line is logged then)."""
        return self._listening

    async def serve(self, stopping: asyncio.Event) -> None:
        """Reach the broker, listen, serve until ``stopping`` is set, then close every session
        and the connection. A stop before the broker was reached ends it without listening.

        Raises:
            the connection's errors, TimeoutError (``start_timeout_s``), OSError (the address).
        """
        loop = asyncio.get_running_loop()
        # Reaching the broker may take long: the loop stays free to see the stop meanwhile.
        start = loop.run_in_executor(None, self.bridge.start, self._start_timeout_s)
        stopped = asyncio.ensure_future(stopping.wait())
        waiters: set[asyncio.Future[Any]] = {start, stopped}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if stopping.is_set():  # before the broker was reached: the connection's retries see its stop
            done, _ = await asyncio.wait({start}, timeout=ABANDON_START_S)
            if done:  # else the executor's thread still owns the connection; the process exits anyway
                start.exception()  # ShutdownRequested, or connected just then: closed either way
                self.bridge.close()
            return
        try:
            await start
            server = await self.door.start(self.bridge, self.host, self.port)
        except BaseException:
            self.bridge.close()
            raise
        host, self.port = server.sockets[0].getsockname()[:2]
        log.info("stomp front door listening on %s:%s", host, self.port)
        self._listening.set()
        try:
            await stopping.wait()
        finally:
            server.close()
            await self.door.close_sessions()
            await server.wait_closed()
            self.bridge.close()

    # -- on a thread of its own (tests, benchmarks) ----------------------------------------

    def __enter__(self) -> RunningFrontDoor:
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, self._stopping), name="stomp-door", daemon=True
        )
        self._thread.start()
        # The broker's start_timeout_s, then the listen itself.
        listen_timeout_s = (self._start_timeout_s or 30.0) + 10.0
        if not self._listening.wait(listen_timeout_s) or self._error is not None:
            self.__exit__()
            if self._error is not None:
                raise self._error
            raise TimeoutError("the front door did not start listening in time")
        return self

    def __exit__(self, *exc: object) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: it stopped by itself
                loop.call_soon_threadsafe(stopping.set)
        thread.join(ABANDON_START_S + 10.0)

    def _run(self, loop: asyncio.AbstractEventLoop, stopping: asyncio.Event) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.serve(stopping))
        except BaseException as exc:
            self._error = exc
        finally:
            self._listening.set()  # wakes a start that waits, on an error too
            loop.close()
