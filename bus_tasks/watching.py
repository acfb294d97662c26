"""Watch the tasks: list, then follow an aggregator's change feed (docs/watching.md).

:class:`WatchState` is the watcher's knowledge, pure (no I/O): what it selects, the revision it
is at, which aggregator it follows; fed listings, replays and feed messages, it says what
changed for its selection. :class:`Watch` drives it over a client (a
:class:`~bus_tasks.client.TasksClient`, which makes it: :meth:`~bus_tasks.client.TasksClient.watch`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bus_tasks import codec, names
from bus_tasks.errors import BusTasksError, ReplyTooLarge, RevisionGone
from bus_tasks.identity import Speech, TrustPolicy, refusal
from bus_tasks.protocol import paging
from bus_tasks.protocol.changes import selects
from bus_tasks.protocol.methods import MethodName

if TYPE_CHECKING:
    from bus_tasks.transport import Bus, Delivery

log = logging.getLogger(__name__)

Kind = Literal["listing", "changed", "removed", "bookmark"]
MISSED_BEATS = 3  # a followed aggregator silent this many beats is taken for gone
DEFAULT_BEAT_S = 5.0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """What a watcher sees: the whole selection (``listing``), one task ``changed`` (added or
    updated) or ``removed`` (it left the view, or no longer matches), or a ``bookmark``."""

    kind: Kind
    revision: int
    task_id: str | None = None
    task: dict[str, Any] | None = None
    tasks: dict[str, dict[str, Any]] | None = None


@dataclass(slots=True)
class Following:
    """The aggregator whose feed a watcher follows (from its answer or its messages)."""

    aggregator: str
    instance: str
    log: str
    rpc_queue: str
    beat_s: float = DEFAULT_BEAT_S

    @classmethod
    def from_wire(cls, head: dict[str, Any]) -> Following:
        return cls(
            str(head["aggregator"]),
            str(head["instance"]),
            str(head["log"]),
            str(head["rpcQueue"]),
            float(head.get("beatS") or DEFAULT_BEAT_S),
        )


class WatchClient(Protocol):
    """What a :class:`Watch` needs of its client: the connection its queue lives on, calls, and
    turns of that connection (a :class:`~bus_tasks.client.TasksClient` is one)."""

    @property
    def connection(self) -> Bus: ...

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        rpc_queue: str | None = None,
    ) -> Any: ...

    def pump(self, timeout_s: float) -> None: ...

    @property
    def trust(self) -> TrustPolicy:
        """Whose messages are believed (SPEC 15): the change feed is aggregators' only."""
        ...


class NeedReplay(Exception):  # a signal to the driver, not an error of bus_tasks
    """Raised by :meth:`WatchState.on_feed` when the followed feed lost messages (replay)."""


class NeedFailover(Exception):  # a signal to the driver
    """Raised by :meth:`WatchState.on_feed` when the followed aggregator stopped."""


@dataclass
class WatchState:
    """A watcher's selection (``tags``, any or all) and how far it has seen."""

    tags: tuple[str, ...] = ()
    match_all: bool = False
    bookmark_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    revision: int = 0
    following: Following | None = None
    known: set[str] = field(default_factory=set)  # ids of the selection, as last told
    heard_at: float = 0.0  # when the followed aggregator was last heard
    _told_at: float = 0.0  # when an event was last given out
    _told_revision: int = 0  # and its revision

    def on_listing(self, result: dict[str, Any]) -> list[WatchEvent]:
        """A listing (``getTaskChanges`` with ``since`` null): the selection starts over."""
        self._follow(result)
        tasks: dict[str, dict[str, Any]] = result["tasks"]
        self.revision = int(result["revision"])
        self.known = set(tasks)
        return [self._told(WatchEvent("listing", self.revision, tasks=tasks))]

    def on_replay(self, result: dict[str, Any]) -> list[WatchEvent]:
        """A replay (``getTaskChanges`` with ``since``): the changes missed, from its answerer on."""
        self._follow(result)
        return self._apply(result["changes"], int(result["revision"]))

    def on_feed(self, message: dict[str, Any]) -> list[WatchEvent]:
        """A feed message of any aggregator; only the followed one's count.

        Raises:
            NeedReplay: when messages of the followed feed were lost (``after`` past what was seen).
            NeedFailover: when the followed aggregator says it stopped.
        """
        following = self.following
        if following is None or message.get("instance") != following.instance:
            return []
        self.heard_at = self.clock()
        if int(message["after"]) > self.revision:
            raise NeedReplay(f"feed of {following.aggregator} skipped to {message['after']}")
        events = self._apply(message["changes"], int(message["revision"]))
        if message.get("stopped"):
            raise NeedFailover(f"aggregator {following.aggregator} stopped")
        return events

    def silent(self) -> bool:
        """The followed aggregator has not been heard for several beats."""
        following = self.following
        return following is not None and self.clock() - self.heard_at > MISSED_BEATS * following.beat_s

    def _follow(self, head: dict[str, Any]) -> None:
        self.following = Following.from_wire(head)
        self.heard_at = self.clock()

    def _apply(self, items: list[dict[str, Any]], revision: int) -> list[WatchEvent]:
        # Every watcher runs this for every change of its feed (issue 28: 50 watchers in one
        # process were the cost of ingest with watchers): the wire items are read in place, no
        # Change made; a malformed one still raises KeyError, TypeError or ValueError.
        events: list[WatchEvent] = []
        seen = self.revision
        wanted, match_all, known = self.tags, self.match_all, self.known
        top = max(seen, revision)
        for item in items:
            at = int(item["revision"])
            if at <= seen:
                continue  # in the listing already, or told before
            task_id = str(item["id"])
            task = item["task"]
            tags = item["tags"]
            if not isinstance(tags, list):
                raise TypeError(f"change of {task_id}: tags {tags!r} is not a list")
            if task is not None and (not wanted or selects(tags, wanted, match_all=match_all)):
                known.add(task_id)
                events.append(WatchEvent("changed", at, task_id, task))
            elif task_id in known:
                known.discard(task_id)
                events.append(WatchEvent("removed", at, task_id))
            else:
                continue
            top = max(top, at)
        self.revision = top
        if events:
            self._told(events[-1])
            return events
        return self.idle()

    def idle(self) -> list[WatchEvent]:
        """A bookmark, when the revision moved past what was told and ``bookmark_s`` passed."""
        if self.revision > self._told_revision and self.clock() - self._told_at >= self.bookmark_s:
            return [self._told(WatchEvent("bookmark", self.revision))]
        return []

    def _told(self, event: WatchEvent) -> WatchEvent:
        self._told_at = self.clock()
        self._told_revision = event.revision
        return event


def decode_feed(body: bytes) -> dict[str, Any]:
    """A feed message decoded, the garbage collector paused meanwhile (JSON makes no cycles;
    a flood's message holds hundreds of TaskDetails, and a collection over a watcher's whole
    process for each of them was most of its decode).

    Raises:
        codec.DecodeError: when it is not JSON; TypeError when not an object.
    """
    with codec.gc_paused():
        message = codec.loads(body)
    if not isinstance(message, dict):
        raise TypeError(f"a feed message is an object, not {type(message).__name__}")
    return message


class Watch:
    """Iterate the changes of a selection; made by :meth:`TasksClient.watch`.

    The watch's queue is bound before it lists, so nothing falls between the listing and the
    first change; it lives on the client's connection until the client is closed.
    """

    def __init__(
        self,
        client: WatchClient,
        tags: str | Sequence[str] | None = None,
        *,
        match: Literal["any", "all"] = "any",
        since: int | None = None,
        bookmark_s: float = 1.0,
        poll_s: float = 0.5,
    ) -> None:
        self.client = client
        wanted = (tags,) if isinstance(tags, str) else tuple(tags or ())
        self.state = WatchState(wanted, match == "all", bookmark_s=bookmark_s)
        self._since = since
        self._poll_s = poll_s
        self._inbox: deque[bytes] = deque()
        self._closed = False
        self._started = False
        # Called when a poll of ``poll_s`` brought nothing (e.g. to redraw what was held back).
        self.on_idle: Callable[[], None] | None = None

    def __iter__(self) -> Iterator[WatchEvent]:
        return self.events()

    def close(self) -> None:
        """Stop: the iterator ends at its next turn."""
        self._closed = True

    def events(self) -> Iterator[WatchEvent]:
        """Listing (unless resumed ``since`` a revision), then changes, until :meth:`close`.

        Raises:
            RevisionGone: when ``since`` cannot be replayed (list again: watch with ``since=None``).
        """
        if not self._started:
            self._started = True
            self._bind()
            yield from self._begin()
        while not self._closed:
            if not self._inbox:
                self.client.pump(self._poll_s)
                if not self._inbox:
                    yield from self.state.idle()
                    if self.on_idle is not None:
                        self.on_idle()
            yield from self._take()
            if self.state.silent():
                log.warning("aggregator %s silent: watching another", self.state.following)
                yield from self._fail_over()

    # -- the driver -------------------------------------------------------------------------

    def _bind(self) -> None:
        connection = self.client.connection
        connection.connect()
        queue = connection.topology.declare_watch_queue()
        connection.consume(queue, self._on_feed, no_ack=True)

    def _on_feed(self, delivery: Delivery) -> None:
        reason = refusal(self.client.trust, Speech.CHANGE, None, delivery.user_id)
        if reason is not None:
            log.warning("change feed message dropped: %s", reason)
        elif not self._closed:
            self._inbox.append(delivery.body)

    def _begin(self) -> Iterator[WatchEvent]:
        if self._since is None:
            yield from self._list()
        else:
            self.state.revision = self._since
            yield from self.state.on_replay(self._ask(self._since))

    def _take(self) -> Iterator[WatchEvent]:
        while self._inbox and not self._closed:
            try:
                message = decode_feed(self._inbox.popleft())
                yield from self.state.on_feed(message)
            except NeedReplay as exc:
                log.info("%s: replaying", exc)
                yield from self._replay()
            except NeedFailover as exc:
                log.info("%s: watching another", exc)
                yield from self._fail_over()
            except (codec.DecodeError, KeyError, TypeError, ValueError) as exc:
                log.warning("malformed feed message dropped: %s", exc)

    def _replay(self) -> Iterator[WatchEvent]:
        """Ask the followed aggregator itself what its feed lost; another one if it is gone."""
        following = self.state.following
        assert following is not None
        try:
            result = self._ask(self.state.revision, rpc_queue=following.rpc_queue, log_name=following.log)
        except BusTasksError:
            yield from self._fail_over()
            return
        yield from self.state.on_replay(result)

    def _fail_over(self) -> Iterator[WatchEvent]:
        """Any aggregator on the same log replays from here; otherwise list again."""
        following = self.state.following
        try:
            result = self._ask(self.state.revision, log_name=following.log if following else None)
        except (RevisionGone, ReplyTooLarge):  # too old, or too many changes to replay: list again
            yield from self._list()
            return
        yield from self.state.on_replay(result)

    def _list(self) -> Iterator[WatchEvent]:
        """A listing; one too large for a reply is paged (getAllTasks), then the changes after
        its first page's revision are replayed, which also says who answers (SPEC section 14)."""
        try:
            result = self._ask(None)
        except ReplyTooLarge:
            options = {"match": "all" if self.state.match_all else "any"}
            call = partial(self.client.call, MethodName.GET_ALL_TASKS)
            listed = paging.collect(call, list(self.state.tags), options).result(with_revision=True)
            replay = self._ask(listed["revision"])
            yield from self.state.on_listing({**replay, **listed})  # its revision, its tasks
            yield from self.state.on_replay(replay)
            return
        yield from self.state.on_listing(result)

    def _ask(self, since: int | None, *, rpc_queue: str | None = None, log_name: str | None = None) -> Any:
        options: dict[str, Any] = {"match": "all" if self.state.match_all else "any"}
        if log_name is not None:
            options["log"] = log_name
        params = {"since": since, "tags": list(self.state.tags), "options": options}
        return self.client.call(MethodName.GET_TASK_CHANGES, params, rpc_queue=rpc_queue or names.RPC_QUEUE)
