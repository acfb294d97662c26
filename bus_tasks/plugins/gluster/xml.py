"""Pure parsing of the gluster CLI's ``--xml`` output: the tasks listing and migration statuses.

No I/O: the runner hands the text in. Two ways to fail, kept apart because the caller words
them differently: :class:`OutputError` (not the XML expected) and :class:`OperationFailed`
(well-formed, but ``opRet != 0``; glusterfs 10.3 may exit 0 then).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree

# How much of an unparsable output an error quotes.
QUOTED_CHARS = 200


class OutputError(ValueError):
    """Raised when the CLI's output is not the XML the command prints."""


class OperationFailed(Exception):
    """Raised when ``<cliOutput>`` says the command failed (``opRet != 0``)."""

    def __init__(self, op_ret: int, op_errno: int, op_errstr: str) -> None:
        super().__init__(op_errstr or f"opRet {op_ret}, opErrno {op_errno}")
        self.op_ret = op_ret
        self.op_errno = op_errno
        self.op_errstr = op_errstr


@dataclass(frozen=True)
class ListedTask:
    """One task of ``volume status all tasks``, as gluster words it."""

    volume: str
    kind: str  # gluster's <type>: "Rebalance", "Remove brick", "Replace brick"
    task_id: str
    status: int | None
    status_str: str
    bricks: tuple[str, ...]


@dataclass(frozen=True)
class Counters:
    """The counters of a migration, for one node or the aggregate."""

    files_scanned: int  # <lookups>
    files_moved: int  # <files>
    files_failed: int  # <failures>
    files_skipped: int  # <skipped>
    total_size_moved: int  # <size>, bytes
    runtime_s: float  # <runtime>
    status: int | None
    status_str: str


@dataclass(frozen=True)
class NodeStatus:
    name: str
    node_id: str
    counters: Counters


@dataclass(frozen=True)
class MigrationStatus:
    """A ``<volRebalance>`` or ``<volRemoveBrick>`` answer (status or stop)."""

    task_id: str | None
    aggregate: Counters
    nodes: tuple[NodeStatus, ...]


def parse_tasks(text: str) -> list[ListedTask]:
    """The tasks of every volume in a ``volume status all tasks --xml`` output."""
    volumes = _child(_envelope(text), "volStatus/volumes")
    listed = []
    for volume in volumes.findall("volume"):
        name = _text(volume, "volName")
        for task in volume.findall("tasks/task"):
            listed.append(
                ListedTask(
                    volume=name,
                    kind=_text(task, "type"),
                    task_id=_text(task, "id"),
                    status=_optional_int(task, "status"),
                    status_str=_text(task, "statusStr"),
                    bricks=tuple((b.text or "").strip() for b in task.findall("params/brick")),
                )
            )
    return listed


def parse_migration(text: str) -> MigrationStatus:
    """A rebalance or remove-brick ``status --xml`` (or ``stop --xml``) output."""
    root = _envelope(text)
    body = root.find("volRebalance")
    if body is None:
        body = root.find("volRemoveBrick")
    if body is None:
        raise OutputError("no <volRebalance> or <volRemoveBrick> in the output")
    task_id = body.findtext("task-id")
    nodes = tuple(
        NodeStatus(_text(node, "nodeName"), _text(node, "id"), _counters(node))
        for node in body.findall("node")
    )
    return MigrationStatus(
        task_id=task_id.strip() if task_id else None,
        aggregate=_counters(_child(body, "aggregate")),
        nodes=nodes,
    )


def _envelope(text: str) -> ElementTree.Element:
    """The ``<cliOutput>`` root, once ``opRet`` says the command succeeded."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise OutputError(f"output is not XML ({exc}): {_quote(text)}") from None
    if root.tag != "cliOutput":
        raise OutputError(f"root element is <{root.tag}>, not <cliOutput>")
    op_ret = _int(root, "opRet")
    if op_ret != 0:
        errstr = (root.findtext("opErrstr") or "").strip()
        raise OperationFailed(op_ret, _optional_int(root, "opErrno") or 0, errstr)
    return root


def _counters(element: ElementTree.Element) -> Counters:
    return Counters(
        files_scanned=_int(element, "lookups"),
        files_moved=_int(element, "files"),
        files_failed=_int(element, "failures"),
        files_skipped=_int(element, "skipped"),
        total_size_moved=_int(element, "size"),
        runtime_s=_float(element, "runtime"),
        status=_optional_int(element, "status"),
        status_str=_text(element, "statusStr"),
    )


def _child(element: ElementTree.Element, path: str) -> ElementTree.Element:
    found = element.find(path)
    if found is None:
        raise OutputError(f"no <{path}> in <{element.tag}>")
    return found


def _text(element: ElementTree.Element, path: str) -> str:
    text = (_child(element, path).text or "").strip()
    if not text:
        raise OutputError(f"<{path}> of <{element.tag}> is empty")
    return text


def _int(element: ElementTree.Element, path: str) -> int:
    text = _text(element, path)
    try:
        return int(text)
    except ValueError:
        raise OutputError(f"<{path}> of <{element.tag}> is not an integer: {text!r}") from None


def _optional_int(element: ElementTree.Element, path: str) -> int | None:
    return _int(element, path) if element.find(path) is not None else None


def _float(element: ElementTree.Element, path: str) -> float:
    text = _text(element, path)
    try:
        value = float(text)
    except ValueError:
        raise OutputError(f"<{path}> of <{element.tag}> is not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise OutputError(f"<{path}> of <{element.tag}> is not a duration: {text!r}")
    return value


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "...")
