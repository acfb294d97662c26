"""``bus-tasks gluster``: the plugin object the entry point ``bus_tasks.plugins: gluster`` names."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import Field

from bus_tasks.client import TasksClient
from bus_tasks.errors import BusTasksError
from bus_tasks.plugins import PluginHost, PluginOptions
from bus_tasks.plugins.gluster.cli import DEFAULT_BINARY, DEFAULT_TIMEOUT_S, GlusterCli
from bus_tasks.plugins.gluster.poller import SUBSYSTEM, GlusterPoller
from bus_tasks.protocol.shapes import record_from_details
from bus_tasks.subsystem.runner import Connect, SubsystemRunner

if TYPE_CHECKING:
    from bus_tasks.core.model import TaskRecord

log = logging.getLogger("bus_tasks.gluster")

DEFAULT_INTERVAL_S = 10.0
# How long the start may wait for the aggregator's records of gluster tasks.
RESTORE_TIMEOUT_S = 10.0
# A one-shot call at start gives up on an unreachable broker instead of retrying forever.
RESTORE_CONNECT_RETRIES = 3


class GlusterOptions(PluginOptions):
    """The options of ``bus-tasks gluster``."""

    interval_s: float = Field(
        DEFAULT_INTERVAL_S, gt=0, allow_inf_nan=False, description="seconds between two polls of gluster"
    )
    gluster_bin: str = Field(
        DEFAULT_BINARY,
        min_length=1,
        description="the gluster CLI to run",
        json_schema_extra={"metavar": "PATH"},
    )
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S,
        gt=0,
        allow_inf_nan=False,
        description="a gluster call still running after this is killed; the default is the CLI's own",
    )


class GlusterSubsystem:
    """Subsystem ``gluster`` on ``runner`` (which holds the name): each :meth:`turn` polls gluster
    and publishes what changed; the announce (and with it stop and revert) waits until the
    publisher holds what gluster lists."""

    def __init__(
        self,
        runner: SubsystemRunner,
        cli: GlusterCli,
        *,
        restored: Iterable[TaskRecord] = (),
        ready: threading.Event | None = None,
    ) -> None:
        self.runner = runner
        self.ready = ready if ready is not None else threading.Event()
        self.poller = GlusterPoller(runner.publisher, cli, restored=restored)
        runner.publisher.on_stop(self.poller.stop_task)
        runner.publisher.on_revert(self.poller.revert_task)

    def turn(self) -> None:
        """One poll; the first that succeeds announces what it found."""
        if self._poll() and not self.runner.announced:
            try:
                self.runner.announce()
            except BusTasksError as exc:  # the broker is away: the next turn announces
                log.warning("gluster tasks not announced: %s", exc)
                return
            log.info("gluster plugin ready: its tasks are published, control commands served")
            self.ready.set()

    def _poll(self) -> bool:
        try:
            return self.poller.poll()
        except BusTasksError as exc:  # the broker is away: the next poll publishes what is still due
            log.warning("gluster poll not published: %s", exc)
            return False


class GlusterPlugin:
    """Publishes gluster's rebalance, remove-brick and replace-brick tasks as subsystem ``gluster``."""

    summary = "publish the tasks of the local glusterd (rebalance, remove-brick) from the gluster CLI"
    options = GlusterOptions

    def run(self, options: GlusterOptions, host: PluginHost) -> int:
        cli = GlusterCli(options.gluster_bin, timeout_s=options.timeout_s, stop=host.stop)
        # The name first: a second plugin is refused before it asks, polls or publishes anything.
        with SubsystemRunner.open(
            SUBSYSTEM, host.connect, stop=host.stop, trust=host.settings.trust
        ) as runner:
            restored = known_tasks(host.connect)
            gluster = GlusterSubsystem(runner, cli, restored=restored, ready=host.ready)
            log.info(
                "polling %s every %gs (each call killed after %gs)",
                options.gluster_bin,
                options.interval_s,
                options.timeout_s,
            )
            runner.run(gluster.turn, options.interval_s)
        log.info("gluster plugin stopped")
        return 0


def known_tasks(connect: Connect) -> list[TaskRecord]:
    """The aggregator's records of gluster tasks, to adopt after a restart; none if it cannot say."""
    try:
        connection = connect(connect_retries=RESTORE_CONNECT_RETRIES)
        with TasksClient(connection, timeout_s=RESTORE_TIMEOUT_S) as client:
            listed = client.get_all_tasks()
    except (BusTasksError, OSError) as exc:
        log.warning("the aggregator's gluster tasks are not known (%s): gluster's are published as new", exc)
        return []
    records = [record_from_details(d) for d in listed.values() if d.get("subsystem") == SUBSYSTEM]
    log.info("the aggregator has %d gluster tasks", len(records))
    return records


plugin = GlusterPlugin()
