"""A TCP proxy that injects broker faults on demand: drop every connection, stall, refuse.

One I/O thread multiplexes every socket with :mod:`selectors`; the public methods hand it a
command and wait (with a deadline) until it is done, so that when ``drop_all()`` returns the
connections are gone, and when ``refuse(True)`` returns the port refuses.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

_CHUNK = 64 * 1024
_MAX_BUFFERED = 256 * 1024  # per direction: stop reading a side whose bytes are not going out
_LINGER_RESET = struct.pack("ii", 1, 0)  # close() then sends a RST, not a FIN


@dataclass(eq=False)
class _Side:
    """One socket of a proxied connection and the bytes waiting to be written to it."""

    sock: socket.socket
    out: bytearray = field(default_factory=bytearray)
    eof: bool = False  # its peer finished sending
    shut: bool = False  # we finished sending to it (FIN passed on)
    mask: int = 0  # what it is registered for in the selector


@dataclass(eq=False)
class _Pipe:
    """A client connection and its upstream connection to the target."""

    client: _Side
    upstream: _Side
    connect_deadline: float
    connecting: bool = True

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:<port>`` to ``target`` that breaks on demand.

    Use it as a context manager (or call :meth:`start` and :meth:`close`); ``port`` is known as
    soon as it is constructed.

    Args:
        target: the ``(host, port)`` to forward to.
        host: the address to listen on.
        connect_timeout_s: how long to wait for the target before resetting the client.
        command_timeout_s: how long a method waits for the I/O thread before raising TimeoutError.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 5.0,
    ) -> None:
        self.target = target
        self.host = host
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self._listener: socket.socket | None = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._pipes: set[_Pipe] = set()
        self._stalled = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"faultproxy:{self.port}", daemon=True)
        self._error: BaseException | None = None
        # Totals since start, readable from any thread (written by the I/O thread only).
        self.accepted = 0
        self.bytes_forwarded = 0

    def __repr__(self) -> str:
        return f"FaultProxy({self.host}:{self.port} -> {self.target[0]}:{self.target[1]})"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        assert self._listener is not None
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Reset every connection, stop listening and join the I/O thread within ``timeout_s``.

        Raises:
            RuntimeError: when the I/O thread does not stop in time, or died of an error.
        """
        if self._thread.is_alive():
            self._stopping = True
            self._wake()
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"{self!r}: I/O thread did not stop within {timeout_s:g}s")
        else:
            self._teardown()
        self._wake_r.close()
        self._wake_w.close()
        self._selector.close()
        if self._error is not None:
            raise RuntimeError(f"{self!r}: I/O thread died") from self._error

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults -------------------------------------------------------------------------

    def drop_all(self) -> int:
        """Reset every live connection, on both sides, at once; returns how many were dropped."""

        def drop() -> int:
            count = len(self._pipes)
            for pipe in list(self._pipes):
                self._close_pipe(pipe, reset=True)
            return count

        return self._call(drop)

    def stall(self) -> None:
        """Stop moving bytes in either direction; connections stay open (a hung broker)."""
        self._call(lambda: self._set_stalled(True))

    def resume(self) -> None:
        """Move bytes again after :meth:`stall`, from where they stopped."""
        self._call(lambda: self._set_stalled(False))

    def refuse(self, refusing: bool = True) -> None:
        """Refuse new connections (nothing listens on ``port``), or listen again on the same port.

        Live connections are not touched: combine with :meth:`drop_all` for a broker that is down.
        """
        self._call(lambda: self._set_refusing(refusing))

    def live_connections(self) -> int:
        """Connections proxied right now (as seen by the I/O thread, after pending events)."""
        return self._call(lambda: len(self._pipes))

    # -- commands -----------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        if not self._thread.is_alive():
            self._check()
            raise RuntimeError(f"{self!r} is not running")
        command = _Command(fn)
        self._commands.put(command)
        self._wake()
        if not command.done.wait(self.command_timeout_s):
            self._check()
            raise TimeoutError(f"{self!r}: I/O thread did not answer within {self.command_timeout_s:g}s")
        if command.error is not None:
            raise command.error
        return command.result  # type: ignore[no-any-return]

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"{self!r}: I/O thread died") from self._error

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already full of wake-ups: the thread will look
            self._wake_w.send(b"\0")

    # -- the I/O thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._selector.select(self._select_timeout()):
                    if key.data == "wake":
                        self._drain_wake()
                    elif key.data == "listener":
                        self._accept()
                    else:
                        pipe, side = key.data
                        if pipe in self._pipes:
                            self._on_ready(pipe, side, mask)
                self._expire_connects()
                # Commands last: they see the effect of every event that was already pending.
                self._run_commands()
        except BaseException as exc:  # reported by close() and by the next command
            self._error = exc
        finally:
            self._teardown()
            self._run_commands()  # release callers waiting on a command

    def _select_timeout(self) -> float | None:
        connecting = [p.connect_deadline for p in self._pipes if p.connecting]
        if not connecting:
            return None
        return max(0.0, min(connecting) - time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if self._error is not None or self._stopping:
                command.error = RuntimeError(f"{self!r} is stopping")
            else:
                try:
                    command.result = command.fn()
                except Exception as exc:  # handed back to the caller
                    command.error = exc
            command.done.set()

    def _teardown(self) -> None:
        for pipe in list(self._pipes):
            self._close_pipe(pipe, reset=True)
        self._set_refusing(True)

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, port))
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        return listener

    def _set_refusing(self, refusing: bool) -> None:
        if refusing and self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):  # never registered (closed before start)
                self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        elif not refusing and self._listener is None:
            self._listener = self._listen(self.port)
            self._selector.register(self._listener, selectors.EVENT_READ, "listener")

    def _set_stalled(self, stalled: bool) -> None:
        self._stalled = stalled
        for pipe in list(self._pipes):
            self._update(pipe)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(_Side(client), _Side(upstream), time.monotonic() + self.connect_timeout_s)
        self._pipes.add(pipe)
        code = upstream.connect_ex(self.target)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._close_pipe(pipe, reset=True)
            return
        self._update(pipe)

    def _expire_connects(self) -> None:
        now = time.monotonic()
        for pipe in [p for p in self._pipes if p.connecting and p.connect_deadline <= now]:
            self._close_pipe(pipe, reset=True)

    def _on_ready(self, pipe: _Pipe, side: _Side, mask: int) -> None:
        try:
            if pipe.connecting and side is pipe.upstream:
                code = side.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise ConnectionRefusedError(code, f"target {self.target}: {errno.errorcode.get(code)}")
                pipe.connecting = False
            elif mask & selectors.EVENT_WRITE and side.out:
                self._write(side)
            if mask & selectors.EVENT_READ:
                self._read(side, pipe.other(side))
        except OSError:
            self._close_pipe(pipe, reset=True)  # one side broke: break the other side the same way
            return
        self._update(pipe)

    def _read(self, side: _Side, to: _Side) -> None:
        try:
            data = side.sock.recv(_CHUNK)
        except BlockingIOError:
            return
        if data:
            to.out += data
            self.bytes_forwarded += len(data)
        else:
            side.eof = True

    def _write(self, side: _Side) -> None:
        try:
            sent = side.sock.send(side.out)
        except BlockingIOError:
            return
        del side.out[:sent]

    def _update(self, pipe: _Pipe) -> None:
        """Pass half-closes on, finish a connection both sides closed, and set what to wait for."""
        try:
            for side in (pipe.client, pipe.upstream):
                other = pipe.other(side)
                ready = not pipe.connecting or side is pipe.client
                if other.eof and not side.out and not side.shut and ready and not self._stalled:
                    side.sock.shutdown(socket.SHUT_WR)
                    side.shut = True
        except OSError:
            self._close_pipe(pipe, reset=True)
            return
        if pipe.client.shut and pipe.upstream.shut:
            self._close_pipe(pipe, reset=False)
            return
        for side in (pipe.client, pipe.upstream):
            self._register(pipe, side, self._interest(pipe, side))

    def _interest(self, pipe: _Pipe, side: _Side) -> int:
        if pipe.connecting and side is pipe.upstream:
            return selectors.EVENT_WRITE  # connecting forwards no byte: allowed while stalled
        if self._stalled:
            return 0
        mask = 0
        if not side.eof and len(pipe.other(side).out) < _MAX_BUFFERED:
            mask |= selectors.EVENT_READ
        if side.out and not (pipe.connecting and side is pipe.upstream):
            mask |= selectors.EVENT_WRITE
        return mask

    def _register(self, pipe: _Pipe, side: _Side, mask: int) -> None:
        if mask == side.mask:
            return
        if side.mask == 0:
            self._selector.register(side.sock, mask, (pipe, side))
        elif mask == 0:
            self._selector.unregister(side.sock)
        else:
            self._selector.modify(side.sock, mask, (pipe, side))
        side.mask = mask

    def _close_pipe(self, pipe: _Pipe, *, reset: bool) -> None:
        self._pipes.discard(pipe)
        for side in (pipe.client, pipe.upstream):
            if side.mask:
                self._selector.unregister(side.sock)
                side.mask = 0
            if reset:
                with contextlib.suppress(OSError):  # already reset by its peer: just close
                    side.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            side.sock.close()


@dataclass(eq=False)
class _Command:
    """Work for the I/O thread, and its outcome for the caller waiting on ``done``."""

    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
