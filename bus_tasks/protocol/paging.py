"""The paged form of ``Host.getAllTasks`` (SPEC section 14): limits, the opaque continue token.

A token carries where the listing stands (the last id listed), the first page's revision (the
point a watch continues from), the listing's name (so a process that still holds its sorted
ids reuses them) and a digest of its filter (so a token used with other tags or match is
refused). It is base64url of a small JSON object: opaque to callers, not a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bus_tasks import codec
from bus_tasks.errors import InternalError, InvalidParameter, ReplyTooLarge

MIN_LIMIT = 1
MAX_LIMIT = 100_000
TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 1024  # a real one is about 200


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a continue token says: the listing, its first revision, the last id listed."""

    listing: str
    revision: int
    after: str
    filter_digest: str


def check_limit(limit: Any) -> int:
    """``options.limit`` as an int in 1..100,000.

    Raises:
        InvalidParameter: when it is not an integer in range (booleans are not integers here).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not MIN_LIMIT <= limit <= MAX_LIMIT:
        raise InvalidParameter("limit", limit)
    return limit


def filter_digest(tags: Sequence[str], *, match_all: bool) -> str:
    """A short digest of a listing's filter; the order and repetition of tags do not count."""
    canonical = codec.dumps({"tags": sorted(set(tags)), "all": match_all})
    return hashlib.sha256(canonical).hexdigest()[:16]


def new_listing() -> str:
    """A name for a listing that starts now."""
    return uuid.uuid4().hex


def encode_token(cursor: Cursor) -> str:
    body = codec.dumps(
        {
            "v": TOKEN_VERSION,
            "l": cursor.listing,
            "r": cursor.revision,
            "a": cursor.after,
            "f": cursor.filter_digest,
        }
    )
    return base64.urlsafe_b64encode(body).decode("ascii").rstrip("=")


def decode_token(token: Any, tags: Sequence[str], *, match_all: bool) -> Cursor:
    """The cursor of ``token``, for a listing with these ``tags`` and ``match_all``.

    Raises:
        InvalidParameter: when the token is not one this service made, or was made for a
            listing with another filter.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidParameter("continue", _shown(token))
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = codec.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidParameter("continue", _shown(token)) from None
    if not (
        isinstance(fields, dict)
        and fields.get("v") == TOKEN_VERSION
        and isinstance(fields.get("l"), str)
        and isinstance(fields.get("a"), str)
        and isinstance(fields.get("f"), str)
        and isinstance(fields.get("r"), int)
        and not isinstance(fields.get("r"), bool)
        and fields["r"] >= 0
    ):
        raise InvalidParameter("continue", _shown(token))
    cursor = Cursor(listing=fields["l"], revision=fields["r"], after=fields["a"], filter_digest=fields["f"])
    if cursor.filter_digest != filter_digest(tags, match_all=match_all):
        raise InvalidParameter("continue", "a token of a listing with other tags or match")
    return cursor


def page_members(revision: int, tasks: list[bytes], token: str | None) -> list[bytes]:
    """A page object ``{"revision", "tasks", "continue"}`` as the pieces of an
    :class:`~bus_tasks.protocol.jsonrpc.EncodedObject`: the tasks' members stand among them as
    they are (the object's brace on the first and last), so the reply is one join of them all,
    not a join into "tasks" and then another into the envelope."""
    pieces = [b'"revision":%d' % revision]
    if tasks:
        pieces.append(b'"tasks":{' + tasks[0])
        pieces += tasks[1:]
        pieces[-1] += b"}"
    else:
        pieces.append(b'"tasks":{}')
    pieces.append(b'"continue":' + codec.dumps(token))
    return pieces


def _shown(token: Any) -> Any:
    """A bad token as an error message shows it: not all of a long one."""
    if isinstance(token, str) and len(token) > 64:
        return token[:64] + "..."
    return token


CLIENT_PAGE_LIMIT = 10_000  # tasks a caller asks per page when it lists every task


class Collector:
    """Gathers every page of one listing, for a caller that wants all tasks (the client, the CLI,
    HTTP without ``limit``); it says what to ask next, whatever does the asking (sync or async).
    """

    def __init__(
        self, tags: Any, options: dict[str, Any] | None, *, page_limit: int = CLIENT_PAGE_LIMIT
    ) -> None:
        self._tags = tags
        self._options = {k: v for k, v in (options or {}).items() if k not in ("limit", "continue")}
        self._options["limit"] = page_limit
        self._token: str | None = None
        self._done = False
        self.revision: int | None = None  # the first page's: where a watch continues
        self.tasks: dict[str, Any] = {}

    def smaller(self) -> bool:
        """Ask half as many tasks per page from now on (a page was still too large for the
        broker, whose limit may be below the aggregator's); False when pages are one task."""
        limit = self._options["limit"]
        if limit <= 1:
            return False
        self._options["limit"] = limit // 2
        return True

    def next_params(self) -> dict[str, Any] | None:
        """The params of the next ``Host.getAllTasks`` call; None once every page is in."""
        if self._done:
            return None
        options = dict(self._options)
        if self._token is not None:
            options["continue"] = self._token
        return {"tags": self._tags, "options": options}

    def take(self, page: Any) -> None:
        """One page's result, as the aggregator answered it."""
        if not (isinstance(page, dict) and isinstance(page.get("tasks"), dict) and "continue" in page):
            raise InternalError("a page of getAllTasks without tasks or continue")
        if self.revision is None:
            self.revision = page.get("revision")
        self.tasks.update(page["tasks"])
        token = page["continue"]
        if token is not None and (not isinstance(token, str) or token == self._token):
            raise InternalError("a page of getAllTasks whose continue token does not move on")
        self._token = token
        self._done = token is None

    def result(self, *, with_revision: bool) -> dict[str, Any]:
        """Every task listed (``{"revision", "tasks"}`` when asked with ``options.revision``)."""
        if with_revision:
            return {"revision": self.revision, "tasks": self.tasks}
        return self.tasks


def collect(call: Callable[[dict[str, Any]], Any], tags: Any, options: dict[str, Any] | None) -> Collector:
    """Every page of one listing, each asked with ``call(params)`` (a ``Host.getAllTasks`` call);
    pages are halved while one is still too large for the broker.

    Raises:
        ReplyTooLarge: when a page of one task is still too large.
    """
    pages = Collector(tags, options)
    while (params := pages.next_params()) is not None:
        try:
            pages.take(call(params))
        except ReplyTooLarge:
            if not pages.smaller():
                raise
    return pages
