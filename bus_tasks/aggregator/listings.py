"""The listings: getAllTasks and VDSM's legacy listings over the view, and a watcher's listing
or replay (getTaskChanges); encoded member by member, and reused while the view is unchanged."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bus_tasks import codec
from bus_tasks.aggregator.changes import ChangeFeed
from bus_tasks.aggregator.paged import answer_page, check_listing_size, check_reply_size
from bus_tasks.config import DEFAULT_MAX_REPLY_BYTES
from bus_tasks.core.paging import Pager
from bus_tasks.core.view import Entry, TaskView
from bus_tasks.errors import MethodNotFound
from bus_tasks.protocol import shapes, vdsm
from bus_tasks.protocol.jsonrpc import EncodedObject
from bus_tasks.protocol.methods import MethodName
from bus_tasks.protocol.params import (
    DEFAULT_OPTIONS,
    ChangesOptions,
    GetAllTasksOptions,
    GetAllTasksParams,
    GetChangesParams,
    LegacyListParams,
    query_tags,
)

LISTING_CACHE_SIZE = 8  # listings (lists of encoded members) kept while the view is unchanged


class Listings:
    """The methods that list many tasks (the dispatcher's table holds them)."""

    def __init__(
        self,
        view: TaskView,
        feed: ChangeFeed | None = None,
        *,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.view = view
        self.feed = feed
        self.max_reply_bytes = max_reply_bytes
        self.pager = Pager(view)
        self._listings: OrderedDict[tuple[Any, ...], list[bytes]] = OrderedDict()
        self._listings_version = -1

    def get_all_tasks(self, params: GetAllTasksParams) -> EncodedObject:
        tags = query_tags(params.tags)
        options = params.options or DEFAULT_OPTIONS
        match_all = options.match == "all"
        if options.limit is not None or options.continue_ is not None:
            return answer_page(
                self.pager,
                tags,
                match_all=match_all,
                limit=options.limit,
                token=options.continue_,
                revision=self.view.revision,
                max_reply_bytes=self.max_reply_bytes,
            )
        if not tags:  # every task: refused from the view's own sums, before anything is built
            check_listing_size(len(self.view), self.view.member_bytes, self.max_reply_bytes)
        listing = self._listing(
            ("tasks", tuple(tags), match_all),
            lambda: [e.member for e in self.view.select(tags, match_all=match_all)],
        )
        if not options.revision:
            return listing
        tasks = b'"tasks":{' + b",".join(listing.members) + b"}"
        return EncodedObject([b'"revision":%d' % self.view.revision, tasks])

    def get_task_changes(self, params: GetChangesParams) -> EncodedObject:
        """A watcher's listing (``since`` None) or replay: the changes after ``since``
        (docs/watching.md); RevisionGone when they are no longer kept."""
        feed = self.feed
        if feed is None:
            raise MethodNotFound(repr(str(MethodName.GET_TASK_CHANGES)))
        options = params.options or ChangesOptions()
        tags = query_tags(params.tags)
        match_all = options.match == "all"
        head = [
            codec.dumps_member("aggregator", feed.name),
            codec.dumps_member("instance", feed.instance),
            codec.dumps_member("log", feed.log_name),
            codec.dumps_member("rpcQueue", feed.rpc_queue),
            b'"revision":%d' % self.view.revision,
        ]
        if params.since is None:
            query = GetAllTasksParams(tags=tags, options=GetAllTasksOptions(match=options.match))
            listing = self.get_all_tasks(query)
            return EncodedObject([*head, b'"tasks":{' + b",".join(listing.members) + b"}"])
        feed.check_log(options.log)
        found = feed.since(params.since, tags, match_all=match_all)
        return EncodedObject([*head, b'"changes":[' + b",".join(found) + b"]"])

    def get_all_tasks_info(self, params: LegacyListParams) -> EncodedObject:
        member = codec.dumps_member
        return self._listing(
            ("info",), lambda: [member(e.id, shapes.task_info(e.id, e.verb)) for e in self._legacy_listing()]
        )

    def get_all_tasks_statuses(self, params: LegacyListParams) -> EncodedObject:
        member = codec.dumps_member
        return self._listing(
            ("statuses",), lambda: [member(e.id, status_of(e)) for e in self._legacy_listing()]
        )

    def _listing(self, key: tuple[Any, ...], build: Callable[[], list[bytes]]) -> EncodedObject:
        """A listing as encoded members; pollers ask the same question again and again, so while
        the view has not changed the members are reused as they are."""
        if self._listings_version != self.view.version:
            self._listings.clear()
            self._listings_version = self.view.version
        members = self._listings.get(key)
        if members is None:
            members = build()
            self._listings[key] = members
            if len(self._listings) > LISTING_CACHE_SIZE:
                self._listings.popitem(last=False)
        else:
            self._listings.move_to_end(key)
        check_reply_size(members, self.max_reply_bytes)
        return EncodedObject(members)

    def _legacy_listing(self) -> list[Entry]:
        """VDSM's rule for its old listings: only the tasks tagged ``spm``."""
        return self.view.select([vdsm.LEGACY_LISTING_TAG])


def status_of(entry: Entry) -> dict[str, Any]:
    return shapes.task_status(entry.id, entry.state, entry.code, entry.message)
