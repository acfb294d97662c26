"""``bus-tasks gluster``: the gluster plugin's command, wired once here (its composition root).

The plugin's parts live in :mod:`bus_tasks.plugins.gluster`; this module is what the entry point
``bus_tasks.plugins: gluster`` names.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import TYPE_CHECKING

from bus_tasks.client import TasksClient
from bus_tasks.errors import BusTasksError, SubsystemTaken
from bus_tasks.plugins.gluster.cli import DEFAULT_BINARY, DEFAULT_TIMEOUT_S, GlusterCli
from bus_tasks.plugins.gluster.poller import SUBSYSTEM, GlusterPoller
from bus_tasks.protocol.shapes import record_from_details
from bus_tasks.subsystem.publisher import TaskPublisher
from workers import options, systemd, wiring

if TYPE_CHECKING:
    from bus_tasks.config import Settings
    from bus_tasks.core.model import TaskRecord
    from bus_tasks.transport import Bus

log = logging.getLogger("bus_tasks.gluster")

DEFAULT_INTERVAL_S = 10.0
# How long the start may wait for the aggregator's records of gluster tasks.
RESTORE_TIMEOUT_S = 10.0


class GlusterPlugin:
    """Publishes gluster's rebalance, remove-brick and replace-brick tasks as subsystem ``gluster``."""

    summary = "publish the tasks of the local glusterd (rebalance, remove-brick) from the gluster CLI"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--interval-s",
            type=options.seconds,
            default=DEFAULT_INTERVAL_S,
            metavar="S",
            help="seconds between two polls of gluster (default: %(default)s)",
        )
        parser.add_argument(
            "--gluster-bin",
            default=DEFAULT_BINARY,
            metavar="PATH",
            help="the gluster CLI to run (default: %(default)s)",
        )
        parser.add_argument(
            "--timeout-s",
            type=options.seconds,
            default=DEFAULT_TIMEOUT_S,
            metavar="S",
            help="a gluster call still running after this is killed (default: %(default)s, the CLI's own)",
        )

    def run(self, args: argparse.Namespace, settings: Settings) -> int:
        wiring.warn_if_identity_off(settings, log)
        stop = wiring.stop_on_signals(log)
        cli = GlusterCli(args.gluster_bin, timeout_s=args.timeout_s, stop=stop)
        publisher = TaskPublisher(wiring.connect(settings, confirm_publish=True, stop=stop), SUBSYSTEM)
        publisher.control.trust = settings.trust
        poller = GlusterPoller(publisher, cli, restored=_known_tasks(settings, stop))
        publisher.on_stop(poller.stop_task)
        publisher.on_revert(poller.revert_task)
        log.info(
            "polling %s every %gs (each call killed after %gs)",
            args.gluster_bin,
            args.interval_s,
            args.timeout_s,
        )
        taken: list[SubsystemTaken] = []
        control: threading.Thread | None = None
        try:
            while not stop.is_set():
                # Control commands (and the announce) only once the publisher holds what gluster lists.
                if _poll(poller) and control is None:
                    connection = wiring.connect(settings, stop=stop)
                    control = threading.Thread(
                        target=_serve_control,
                        args=(publisher, connection, stop, taken),
                        name="control",
                        daemon=True,
                    )
                    control.start()
                    log.info("gluster plugin ready: its tasks are published, control commands served")
                    systemd.notify(systemd.READY)
                stop.wait(args.interval_s)
        finally:
            stop.set()
            if control is not None:
                control.join(10.0)
            publisher.close()
        if taken:
            print(f"bus-tasks gluster: {taken[0].message}", file=sys.stderr)
            return 1
        log.info("gluster plugin stopped")
        return 0


def _poll(poller: GlusterPoller) -> bool:
    try:
        return poller.poll()
    except BusTasksError as exc:  # the broker is away: the next poll publishes what is still due
        log.warning("gluster poll not published: %s", exc)
        return False


def _serve_control(
    publisher: TaskPublisher, connection: Bus, stop: threading.Event, taken: list[SubsystemTaken]
) -> None:
    try:
        publisher.serve_control(connection, stop)
    except SubsystemTaken as exc:
        taken.append(exc)
        stop.set()
    finally:
        connection.close()


def _known_tasks(settings: Settings, stop: threading.Event) -> list[TaskRecord]:
    """The aggregator's records of gluster tasks, to adopt after a restart; none if it cannot say."""
    try:
        with TasksClient(
            wiring.connect(settings, stop=stop, connect_retries=3), timeout_s=RESTORE_TIMEOUT_S
        ) as client:
            listed = client.get_all_tasks()
    except (BusTasksError, OSError) as exc:
        log.warning("the aggregator's gluster tasks are not known (%s): gluster's are published as new", exc)
        return []
    records = [record_from_details(d) for d in listed.values() if d.get("subsystem") == SUBSYSTEM]
    log.info("the aggregator has %d gluster tasks", len(records))
    return records


plugin = GlusterPlugin()
