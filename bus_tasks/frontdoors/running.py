"""A STOMP front door on its own thread and loop (which owns the broker connection): for tests, benchmarks."""

from __future__ import annotations

import asyncio
import ssl
import threading

from bus_tasks.frontdoors.bridge import RpcBridge
from bus_tasks.frontdoors.stomp import StompFrontDoor, StompLimits
from bus_tasks.transport import Bus


class RunningFrontDoor:
    """``with RunningFrontDoor(connection, timeout_s=...) as door:`` serves on ``door.port``."""

    def __init__(
        self,
        connection: Bus,
        *,
        timeout_s: float,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        limits: StompLimits | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.door = StompFrontDoor(timeout_s=timeout_s, ssl_context=ssl_context, limits=limits)
        self.bridge = RpcBridge(connection, self.door.on_reply, door="stomp")
        self.host = host
        self.port = port
        self._start_timeout_s = start_timeout_s
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stomp-door", daemon=True)

    def __enter__(self) -> RunningFrontDoor:
        try:
            self.bridge.start(self._start_timeout_s)  # here; from then on the loop's thread owns it
        except BaseException:
            self.bridge.close()
            raise
        self._thread.start()
        if not self._ready.wait(self._start_timeout_s):
            raise TimeoutError("the front door did not start listening in time")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10.0)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            try:
                server = await self.door.start(self.bridge, self.host, self.port)
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stopping.wait()
            server.close()
            await self.door.close_sessions()
            await server.wait_closed()
        finally:
            self.bridge.close()
