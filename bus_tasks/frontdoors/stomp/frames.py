"""STOMP 1.2 frames, pure: an incremental parser (bytes in, frames out) and the encoder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1 << 20
HEARTBEAT = b"\n"
# CONNECT and CONNECTED keep their header values raw (STOMP 1.2, "Value Encoding").
_RAW_COMMANDS = frozenset({"CONNECT", "CONNECTED"})
_UNESCAPE = {"r": "\r", "n": "\n", "c": ":", "\\": "\\"}
_ESCAPE = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})


class FrameError(ValueError):
    """Raised when bytes are not a STOMP 1.2 frame, or a frame exceeds a limit."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame; the first of repeated headers wins, as STOMP 1.2 says."""

    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value  # the common case: nothing escaped
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        nxt = next(chars, "")
        if nxt not in _UNESCAPE:
            raise FrameError(f"undefined escape sequence \\{nxt} in a header")
        out.append(_UNESCAPE[nxt])
    return "".join(out)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The command and headers of a frame's head (the bytes before its blank line)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError("frame head is not UTF-8") from exc
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    command = lines[0]
    if not command or not command.isalpha() or not command.isupper():
        raise FrameError(f"bad command line {command[:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if "\r" in line:  # STOMP 1.2: no CR in a header but its line's end (escaped as \r instead)
            raise FrameError(f"carriage return inside a header line {line[:40]!r}")
        name, colon, value = line.partition(":")
        if not colon or not name:
            raise FrameError(f"bad header line {line[:40]!r}")
        if command not in _RAW_COMMANDS:
            name, value = _unescape(name), _unescape(value)
        headers.setdefault(name, value)
    return command, headers


def _head_end(buf: bytearray) -> tuple[int, int]:
    """Where the head ends (before its blank line, LF or CRLF) and the blank line's length; -1 if not yet."""
    pos = 0
    while (nl := buf.find(b"\n", pos)) >= 0:
        if nl + 1 < len(buf) and buf[nl + 1] == 0x0A:
            return nl, 2
        if buf[nl + 1 : nl + 3] == b"\r\n":
            return nl, 3
        pos = nl + 1
    return -1, 0


class FrameParser:
    """Feed it bytes as they arrive; it returns the whole frames they complete."""

    def __init__(
        self, *, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buffer = bytearray()
        self._head: tuple[str, dict[str, str]] | None = None
        self._body_start = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Frames completed by ``data``; heart-beats (EOLs between frames) are skipped.

        Raises:
            FrameError: on a malformed frame or one over a limit; the stream is unusable after.
        """
        return list(self.frames(data))

    def frames(self, data: bytes | bytearray | memoryview) -> Iterator[Frame]:
        """The frames completed by ``data``, each as soon as it is parsed: a caller handles those
        before a malformed one, in order, before the FrameError this raises at it."""
        self._buffer += data  # now, not at the first next(): ``data`` may be a reused buffer's view
        return self._drain()

    def _drain(self) -> Iterator[Frame]:
        while (frame := self._next()) is not None:
            yield frame

    def _next(self) -> Frame | None:
        buf = self._buffer
        if self._head is None:
            while buf[:1] == b"\n" or buf[:2] == b"\r\n":  # heart-beats
                del buf[: 1 if buf[:1] == b"\n" else 2]
            if buf == b"\r":
                return None
            cut, sep = _head_end(buf)
            if cut < 0:
                if b"\x00" in buf:
                    raise FrameError("frame ended (NUL) before its headers did")
                # Past the limit by more than a blank line's first two bytes: however the rest
                # arrives, its head is over the limit (so refused the same at once or in pieces).
                if len(buf) > self.max_header_bytes + 2:
                    raise FrameError(f"frame header over {self.max_header_bytes} bytes")
                return None
            if cut > self.max_header_bytes:
                raise FrameError(f"frame header over {self.max_header_bytes} bytes")
            head = bytes(buf[:cut])
            if b"\x00" in head:
                raise FrameError("NUL inside a frame header")
            self._head = _parse_head(head)
            self._body_start = cut + sep
        return self._body()

    def _body(self) -> Frame | None:
        assert self._head is not None
        command, headers = self._head
        buf, start = self._buffer, self._body_start
        length_text = headers.get("content-length")
        if length_text is not None:
            # ASCII digits only (str.isdigit also takes "²"), and few enough of them for int().
            if not (length_text.isascii() and length_text.isdigit()):
                raise FrameError(f"bad content-length {length_text[:20]!r}")
            digits = length_text.lstrip("0") or "0"
            if len(digits) > len(str(self.max_body_bytes)) or int(digits) > self.max_body_bytes:
                raise FrameError(f"body of {digits[:20]} bytes over the limit of {self.max_body_bytes}")
            length = int(digits)
            if len(buf) < start + length + 1:
                return None
            if buf[start + length] != 0:
                raise FrameError("no NUL after content-length bytes of body")
            end = start + length
        else:
            end = buf.find(b"\x00", start)
            if end < 0:
                if len(buf) - start > self.max_body_bytes:
                    raise FrameError(f"body over the limit of {self.max_body_bytes} bytes")
                return None
            if end - start > self.max_body_bytes:
                raise FrameError(f"body over the limit of {self.max_body_bytes} bytes")
        body = bytes(buf[start:end])
        del buf[: end + 1]
        self._head = None
        return Frame(command, headers, body)


def _escape(text: str) -> str:
    if "\\" in text or ":" in text or "\n" in text or "\r" in text:
        return text.translate(_ESCAPE)
    return text


def encode(frame: Frame) -> bytes:
    """The frame's bytes, LF line endings, escaped headers (not for CONNECT/CONNECTED), NUL."""
    raw = frame.command in _RAW_COMMANDS
    lines = [frame.command]
    for name, value in frame.headers.items():
        if raw:
            lines.append(f"{name}:{value}")
        else:
            lines.append(f"{_escape(name)}:{_escape(value)}")
    head = ("\n".join(lines) + "\n\n").encode("utf-8")
    return b"".join((head, frame.body, b"\x00"))


def message(destination: str, subscription: str, message_id: str, body: bytes) -> bytes:
    """What ``encode`` makes of a MESSAGE with a JSON ``body``, built directly: ``destination``,
    ``subscription``, ``message-id``, ``content-type: application/json`` and ``content-length``."""
    head = (
        f"MESSAGE\ndestination:{_escape(destination)}\nsubscription:{_escape(subscription)}"
        f"\nmessage-id:{_escape(message_id)}\ncontent-type:application/json\ncontent-length:{len(body)}\n\n"
    )
    return b"".join((head.encode("utf-8"), body, b"\x00"))
