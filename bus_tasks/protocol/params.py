"""The params of every RPC method, as the aggregator binds them (SPEC section 5). No I/O.

``extra="forbid"``: a misspelled param is reported, not ignored. ``options`` objects are the
exception where the SPEC reserves them for extension.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from bus_tasks.core.model import check_tag
from bus_tasks.errors import InvalidParameter, InvalidParams

log = logging.getLogger(__name__)

MAX_QUERY_TAGS = 256


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GetAllTasksOptions(BaseModel):
    """Known options are checked; unknown ones are ignored (logged at debug): ``options`` is for
    extension, so a newer client's options must not break an older server."""

    model_config = ConfigDict(extra="allow", frozen=True)

    match: Literal["any", "all"] = "any"
    # Answer {"revision": N, "tasks": {...}}: the tasks, and the revision of the view they are
    # from (the event log's position; see TaskView.revision). Off: VDSM's shape, {id: details}.
    revision: StrictBool = False
    # Paging (SPEC 14): checked by the listing, so that a bad limit or token is code 1000.
    limit: JsonValue = None
    continue_: JsonValue = Field(default=None, alias="continue")

    @model_validator(mode="after")
    def _ignore_unknown(self) -> GetAllTasksOptions:
        if self.model_extra:
            log.debug("getAllTasks: unknown options ignored: %s", sorted(self.model_extra))
        return self


DEFAULT_OPTIONS = GetAllTasksOptions()


class GetAllTasksParams(_Params):
    tags: StrictStr | list[StrictStr] | None = None
    options: GetAllTasksOptions | None = None


class LegacyListParams(_Params):
    spUUID: JsonValue = None
    options: JsonValue = None


class TaskParams(_Params):
    taskID: StrictStr


class ClearParams(TaskParams):
    force: StrictBool = False  # an operator's removal of a task in any state (logged)


class RetagParams(TaskParams):
    tags: list[StrictStr]


class NoParams(_Params):
    pass


class ChangesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    match: Literal["any", "all"] = "any"
    log: StrictStr | None = None  # the log the caller's revision counts in (None: this one's)


class GetChangesParams(_Params):
    since: StrictInt | None = Field(default=None, ge=0)  # None: a listing; else changes after it
    tags: StrictStr | list[StrictStr] | None = None
    options: ChangesOptions | None = None


def query_tags(tags: str | list[str] | None) -> list[str]:
    """The tags of a query (``getAllTasks``, a watch, the HTTP API's ``tag=``), checked.

    Raises:
        InvalidParams: for more than ``MAX_QUERY_TAGS``; InvalidParameter: for a malformed tag.
    """
    if tags is None or tags == "":
        return []
    listed = [tags] if isinstance(tags, str) else tags
    if len(listed) > MAX_QUERY_TAGS:
        raise InvalidParams(f"tags: at most {MAX_QUERY_TAGS} tags, got {len(listed)}")
    for tag in listed:
        try:
            check_tag(tag)
        except ValueError:
            raise InvalidParameter("tags", tag) from None
    return listed
