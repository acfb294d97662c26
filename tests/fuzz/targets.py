"""The fuzz targets: each hands any bytes to one parser of outside input and checks its contract.

A target returns when the parser answered with a result or with its typed error. Any other
exception is a bug, and so is :class:`ContractBroken` (the parser answered, but against one of
its laws). Importable without atheris: the hypothesis properties
(``tests/unit/test_parsers_fuzz.py``) and the atheris runner (``tests/fuzz/run.py``) call the same
functions, so a crasher that either finds is replayed by the suite.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yarl

from bus_tasks import codec
from bus_tasks.aggregator.methods import Dispatcher, Reply
from bus_tasks.config import CONFIG_ENV, ENV_PREFIX, load_settings
from bus_tasks.core.model import (
    Event,
    State,
    TaskRecord,
    check_tag,
    decode_announced,
    decode_event,
    decode_heartbeat,
    decode_replica_beat,
)
from bus_tasks.core.view import TaskView
from bus_tasks.errors import BusTasksError, ConfigError, EventRejected
from bus_tasks.frontdoors.http.answers import page_of, revision_of, selection_of
from bus_tasks.frontdoors.stomp.frames import Frame, FrameError, FrameParser, encode
from bus_tasks.plugins.gluster.xml import OperationFailed, OutputError, parse_migration, parse_tasks
from bus_tasks.protocol import jsonrpc
from bus_tasks.protocol.replies import unpack_batch

Target = Callable[[bytes], None]


class ContractBroken(AssertionError):
    """Raised when a parser answered, but against a law of its contract."""


# -- STOMP frames (the STOMP front door) -----------------------------------------------------

# Small limits, so that short inputs reach the limit checks as well.
STOMP_MAX_HEADER_BYTES = 256
STOMP_MAX_BODY_BYTES = 512


def _stomp(chunks: Iterable[bytes]) -> tuple[list[Frame], bool]:
    """The frames a new parser yields for ``chunks``, and whether it raised FrameError after them."""
    parser = FrameParser(max_header_bytes=STOMP_MAX_HEADER_BYTES, max_body_bytes=STOMP_MAX_BODY_BYTES)
    frames: list[Frame] = []
    try:
        for chunk in chunks:
            for frame in parser.frames(chunk):
                frames.append(frame)
    except FrameError:
        return frames, True
    return frames, False


def stomp_frames(data: bytes) -> None:
    """A STOMP byte stream: its frames, then FrameError at a malformed one (or one over a limit).

    Laws: the frames and the error do not depend on how the bytes arrive (at once or in pieces);
    every frame parsed encodes to bytes that parse back to the same frame.
    """
    whole = _stomp([data])
    step = 1 + (data[0] % 11 if data else 0)
    pieces = _stomp(data[i : i + step] for i in range(0, len(data), step))
    if pieces != whole:
        raise ContractBroken(f"fed at once: {whole}; fed {step} bytes at a time: {pieces}")
    for frame in whole[0]:
        again = FrameParser().feed(encode(frame))
        if again != [frame]:
            raise ContractBroken(f"{frame} encodes to bytes that parse as {again}")


# -- JSON-RPC requests, single and batched (the RPC queue, every front door) ------------------

TASK_RUNNING = "00000000-0000-4000-8000-000000000001"  # vdsm, tagged spm
TASK_FINISHED = "00000000-0000-4000-8000-000000000002"  # vdsm, done: clear and revert apply
TASK_ABORTING = "00000000-0000-4000-8000-000000000003"  # gluster, aborting: stop is refused
MAX_BATCH_CALLS = 8  # the aggregator refuses longer batches as a whole (its max_batch_calls)
_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _record(task_id: str, subsystem: str, tags: tuple[str, ...], state: State) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        subsystem=subsystem,
        verb="copyImage",
        tags=tags,
        state=state,
        created_at=_AT,
        updated_at=_AT,
    )


def seeded_view() -> TaskView:
    """A view of three tasks, so that calls naming them reach past the lookup."""
    view = TaskView(clock=_AT.timestamp)
    for seq, record in enumerate(
        (
            _record(TASK_RUNNING, "vdsm", ("spm",), State.RUNNING),
            _record(TASK_FINISHED, "vdsm", ("spm", "volume:gv1"), State.FINISHED),
            _record(TASK_ABORTING, "gluster", ("gluster", "volume:gv1"), State.ABORTING),
        ),
        start=1,
    ):
        view.apply(Event(event="created", seq=seq, task=record))
    return view


class _Crashes(logging.Handler):
    """The tracebacks the dispatcher logs when a method raised what no caller can be blamed for."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.tracebacks.append(logging.Formatter().formatException(record.exc_info))

    @contextmanager
    def watching(self, logger: str) -> Iterator[None]:
        log = logging.getLogger(logger)
        log.addHandler(self)
        try:
            yield
        finally:
            log.removeHandler(self)
        if self.tracebacks:
            raise ContractBroken("a request crashed the dispatcher:\n" + self.tracebacks[0])


def _check_response(body: bytes, request_id: Any) -> None:
    """``body`` is a JSON-RPC 2.0 response to ``request_id`` (SPEC 5: integer code, string message)."""
    response = codec.loads(body)
    if not isinstance(response, dict) or response.get("jsonrpc") != "2.0":
        raise ContractBroken(f"not a JSON-RPC response: {body[:200]!r}")
    if ("result" in response) == ("error" in response) or response.get("id") != request_id:
        raise ContractBroken(f"not the response to id {request_id!r}: {body[:200]!r}")
    error = response.get("error", {"code": 0, "message": ""})
    if (
        not isinstance(error, dict)
        or type(error.get("code")) is not int
        or not isinstance(error.get("message"), str)
    ):
        raise ContractBroken(f"a malformed error object: {body[:200]!r}")


def _check_reply(reply: Reply, request_id: Any) -> None:
    if reply.forward is not None:
        return  # a control command: the owning subsystem answers it
    if reply.body is None:
        raise ContractBroken(f"no answer to id {request_id!r}")
    _check_response(reply.body, request_id)


def rpc_request(data: bytes) -> None:
    """A JSON-RPC request body, served as the aggregator serves one (a batch: member by member).

    Laws: every call is answered with a JSON-RPC response carrying its id (or null when it has no
    well-formed one); no input makes a method crash (an Internal error from an exception).
    """
    dispatcher = Dispatcher(seeded_view())
    crashes = _Crashes()
    with crashes.watching("bus_tasks.aggregator"):
        if not jsonrpc.is_batch(data):
            _check_reply(dispatcher.handle(data), jsonrpc.salvage_id(data))
            return
        try:
            members = jsonrpc.parse_batch(data)
        except BusTasksError as exc:
            _check_response(jsonrpc.error_body(None, exc), None)
            return
        for member in members[:MAX_BATCH_CALLS]:
            _check_reply(dispatcher.handle_member(member), jsonrpc.id_of(member))


# -- JSON-RPC replies (the client's input, from whoever answers) --------------------------------

REPLY_IDS = ("1", "2")
REPLY_METHODS = ("Host.getAllTasks", "Task.getStatus")


def rpc_reply(data: bytes) -> None:
    """A reply body as the client and the relay read it: the result, or the typed error it carries
    (InternalError when it is no response); a batch's reply: one outcome per call."""
    with suppress(BusTasksError):
        jsonrpc.outcome(jsonrpc.parse_response(data))
    try:
        outcomes = unpack_batch(data, list(REPLY_IDS), list(REPLY_METHODS))
    except BusTasksError:
        return
    if [o.method for o in outcomes] != list(REPLY_METHODS):
        raise ContractBroken(f"outcomes {outcomes} for the calls {REPLY_METHODS}")


# -- events (the events exchange) -----------------------------------------------------------------

MAX_EVENT_BYTES = 64 * 1024


def _round_trip(decoded: Any, decode: Callable[[bytes], Any]) -> None:
    again = decode(codec.dumps(decoded.to_wire()))
    if again != decoded:
        raise ContractBroken(f"{decoded!r} re-encoded decodes as {again!r}")


def events(data: bytes) -> None:
    """A body on the events exchange: an event (applied to a view), a heartbeat, an aggregator's
    beat or an announce marker; or EventRejected.

    Law: what is accepted re-encodes to a body that decodes to the same thing (nothing accepted
    changes on its way through the view).
    """
    try:
        event = decode_event(data, max_bytes=MAX_EVENT_BYTES)
        seeded_view().apply(event)
    except EventRejected:
        pass
    else:
        _round_trip(event, lambda body: decode_event(body, max_bytes=4 * MAX_EVENT_BYTES))
    decoders: tuple[Callable[[bytes], Any], ...] = (
        lambda body: decode_announced(body, max_bytes=MAX_EVENT_BYTES),
        decode_heartbeat,
        decode_replica_beat,
    )
    for decode in decoders:
        try:
            decoded = decode(data)
        except EventRejected:
            continue
        _round_trip(decoded, decode)


# -- gluster XML (the gluster CLI's output) --------------------------------------------------------


def gluster_xml(data: bytes) -> None:
    """The gluster CLI's output, decoded as the plugin's runner decodes it: the tasks listing and
    a migration status, or OutputError (not the XML expected) or OperationFailed (opRet != 0)."""
    text = data.decode("utf-8", errors="replace")
    with suppress(OutputError, OperationFailed):
        parse_tasks(text)
    with suppress(OutputError, OperationFailed):
        parse_migration(text)


# -- the config file and the environment -------------------------------------------------------------


@contextmanager
def _environment(values: dict[bytes, bytes]) -> Iterator[None]:
    """``BUS_TASKS_*`` variables set to ``values`` alone, for the block; as they were after."""
    prefix = ENV_PREFIX.encode()
    saved = {name: value for name, value in os.environb.items() if name.upper().startswith(prefix)}
    for name in saved:
        del os.environb[name]
    try:
        os.environb.update(values)
        yield
    finally:
        for name in [n for n in os.environb if n.upper().startswith(prefix)]:
            del os.environb[name]
        os.environb.update(saved)


def config(data: bytes) -> None:
    """A config file and the environment: Settings, or ConfigError (naming what is wrong).

    The input is the file's bytes, then, after a NUL, the environment: ``NAME=VALUE`` lines, each
    ``NAME`` a setting without the ``BUS_TASKS_`` prefix.
    """
    text, _, env_part = data.partition(b"\0")
    env: dict[bytes, bytes] = {}
    for line in env_part.split(b"\n"):
        name, eq, value = line.partition(b"=")
        if eq and name and b"\0" not in line:
            env[ENV_PREFIX.encode() + name.upper()] = value
    with tempfile.TemporaryDirectory(prefix="bus_tasks_fuzz_") as directory:
        path = Path(directory) / "bus_tasks.toml"
        path.write_bytes(text)
        env[CONFIG_ENV.encode()] = os.fsencode(path)  # last: the input names no other file
        with _environment(env), suppress(ConfigError):
            load_settings()


# -- HTTP query parameters (the HTTP front door) -----------------------------------------------------

TASKS_QUERY = frozenset({"tag", "match"})
WATCH_QUERY = frozenset({"tag", "match", "since"})


def http_query(data: bytes) -> None:
    """The query string of ``/api/tasks`` and ``/api/watch`` (parsed as aiohttp parses it), then,
    after a newline, a ``Last-Event-ID`` header: the selection, the page and the revision, or
    InvalidParameter / InvalidParams.

    Laws: a selection accepted holds the query's tags, in order, each a valid tag; an error can be
    sent (its wire form encodes: the query's bytes need not be UTF-8).
    """
    raw_query, _, header = data.partition(b"\n")
    try:  # as aiohttp reads a request's target
        target = raw_query.decode("utf-8", "surrogateescape")
        query = yarl.URL.build(path="/api/watch", query_string=target, encoded=True).query
    except ValueError:
        return  # aiohttp answers 400 before any handler runs
    for allowed in (TASKS_QUERY, WATCH_QUERY):
        try:
            selection = selection_of(query, allowed=allowed)
        except BusTasksError as exc:
            codec.dumps(exc.to_wire())
            continue
        if selection.tags != tuple(query.getall("tag", ())):
            raise ContractBroken(f"selection {selection} of the query {query}")
        for tag in selection.tags:
            check_tag(tag)
    for text, name in (
        (query.get("since"), "since"),
        (header.decode("utf-8", "surrogateescape"), "Last-Event-ID"),
    ):
        try:
            revision = revision_of(text, name)
        except BusTasksError as exc:
            codec.dumps(exc.to_wire())
            continue
        if revision is not None and revision < 0:
            raise ContractBroken(f"revision {revision} from {text!r}")
    try:  # the paging of /api/tasks (SPEC 14): the RPC checks the limit's range and the token
        page = page_of(query)
    except BusTasksError as exc:
        codec.dumps(exc.to_wire())
        return
    if "limit" in page and not (isinstance(page["limit"], int) and page["limit"] >= 0):
        raise ContractBroken(f"limit {page['limit']!r} of the query {query}")
    if page.get("continue", "") != query.get("continue", ""):
        raise ContractBroken(f"continue {page.get('continue')!r} of the query {query}")


TARGETS: dict[str, Target] = {
    "stomp_frames": stomp_frames,
    "rpc_request": rpc_request,
    "rpc_reply": rpc_reply,
    "events": events,
    "gluster_xml": gluster_xml,
    "config": config,
    "http_query": http_query,
}
