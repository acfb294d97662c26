"""Listings of any size (SPEC section 14): pages of ``Host.getAllTasks``, and the reply size check."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from bus_tasks.core.paging import Pager, PageTooLarge
from bus_tasks.errors import ReplyTooLarge
from bus_tasks.protocol import paging
from bus_tasks.protocol.jsonrpc import EncodedObject, RequestId, error_body

log = logging.getLogger(__name__)

# Room left in a reply for what is not a task: the envelope, the id, the revision, the token.
ENVELOPE_BYTES = 2048


def check_reply_size(members: Sequence[bytes], max_reply_bytes: int) -> None:
    """Refuse a listing of ``members`` whose reply would be over ``max_reply_bytes``.

    Raises:
        ReplyTooLarge: with the number of tasks and the bytes they would take.
    """
    check_listing_size(len(members), sum(map(len, members)), max_reply_bytes)


def check_listing_size(count: int, member_bytes: int, max_reply_bytes: int) -> None:
    """Refuse a listing of ``count`` members of ``member_bytes`` in all (the view keeps that sum
    for a listing of every task: it is refused without being built).

    Raises:
        ReplyTooLarge: with the number of tasks and the bytes they would take.
    """
    size = member_bytes + count  # and their commas
    if size + ENVELOPE_BYTES > max_reply_bytes:
        raise ReplyTooLarge(count, size)


def refuse_oversize(method: str, request_id: RequestId, body: bytes, max_reply_bytes: int) -> bytes | None:
    """The -32012 error to send instead of ``body`` when it is over ``max_reply_bytes``; else None."""
    if len(body) <= max_reply_bytes:
        return None
    error = ReplyTooLarge(size=len(body))
    log.warning("rpc %r id=%r failed: %d %r", method, request_id, error.code, error.message)
    return error_body(request_id, error)


def answer_page(
    pager: Pager,
    tags: Sequence[str],
    *,
    match_all: bool,
    limit: Any,
    token: Any,
    revision: int,
    max_reply_bytes: int,
) -> EncodedObject:
    """One page ``{"revision", "tasks", "continue"}`` of a listing; the first when ``token`` is None.

    A page holds at most ``limit`` tasks, fewer when more would not fit in ``max_reply_bytes``.

    Raises:
        InvalidParameter: a limit out of 1..100,000; a malformed token, or one of another filter.
        ReplyTooLarge: when one task alone would not fit in a reply.
    """
    count = paging.check_limit(limit)
    digest = paging.filter_digest(tags, match_all=match_all)
    if token is None:
        listing, after, first_revision = paging.new_listing(), None, revision
    else:
        cursor = paging.decode_token(token, tags, match_all=match_all)
        listing, after, first_revision = cursor.listing, cursor.after, cursor.revision
    try:
        page = pager.page(
            listing,
            tags,
            match_all=match_all,
            after=after,
            limit=count,
            max_bytes=max_reply_bytes - ENVELOPE_BYTES,
        )
    except PageTooLarge as exc:
        raise ReplyTooLarge(1, exc.size) from None
    next_token = None
    if page.last_id is not None:
        next_token = paging.encode_token(paging.Cursor(listing, first_revision, page.last_id, digest))
    return EncodedObject(paging.page_members(first_revision, page.members, next_token))
