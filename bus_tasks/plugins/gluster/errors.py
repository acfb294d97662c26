"""The gluster plugin's errors: VDSM's gluster codes, with the CLI's ``opErrstr`` in the message."""

from __future__ import annotations

from bus_tasks.errors import BusTasksError


class GlusterError(BusTasksError):
    """Raised when a gluster CLI call fails; the root of the plugin's CLI errors.

    The message is VDSM's form: the title, then ``error: <why>`` (the CLI's ``opErrstr``, or its
    output) and ``return code: <rc>`` on lines of their own.
    """

    code = 4100
    title = "Gluster Exception"

    def __init__(self, detail: str, *, rc: int = 0) -> None:
        message = self.title
        if detail:
            message += f"\nerror: {detail}"
        if rc:
            message += f"\nreturn code: {rc}"
        super().__init__(message=message)
        self.detail = detail
        self.rc = rc


class GlusterCommandFailed(GlusterError):
    """Raised when a gluster command (e.g. a rebalance or remove-brick stop) fails."""

    code = 4107
    title = "Command failed"


class GlusterTasksListFailed(GlusterError):
    """Raised when ``gluster volume status all tasks`` fails: no listing this poll."""

    code = 4161
    title = "Volume tasks list failed"


class GlusterRebalanceStatusFailed(GlusterError):
    """Raised when ``gluster volume rebalance VOL status`` fails: that task is skipped this poll."""

    code = 4138
    title = "Volume rebalance status failed"


class GlusterRemoveBrickStatusFailed(GlusterError):
    """Raised when ``gluster volume remove-brick VOL BRICK... status`` fails: that task is skipped."""

    code = 4152
    title = "Volume remove brick status failed"


class RevertNotSupported(BusTasksError):
    """Raised when a gluster task is reverted: gluster cannot undo a rebalance or a remove-brick."""

    def __init__(self, task_id: str) -> None:
        super().__init__(message=f"{self.title}: revert is not supported for gluster tasks (task {task_id})")
