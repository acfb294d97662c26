"""Plugins: packages that publish the tasks of one more subsystem (SPEC section 8).

A plugin registers an object under the entry-point group ``bus_tasks.plugins``; the name of the
entry point is the ``bus-tasks`` command that runs it. Installing the package is all it takes:
``bus-tasks`` lists every installed plugin among its commands.
"""

from __future__ import annotations

import argparse
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bus_tasks.config import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "bus_tasks.plugins"


class Plugin(Protocol):
    """What ``bus-tasks`` needs of a plugin to run it as one of its commands."""

    summary: str  # one line for ``bus-tasks --help``

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's own options (``--broker`` and ``--log-level`` are added for it)."""
        ...

    def run(self, args: argparse.Namespace, settings: Settings) -> int:
        """Run until stopped (SIGTERM, SIGINT); returns the exit status."""
        ...


def installed() -> dict[str, Plugin]:
    """Every installed plugin by command name; one that cannot be loaded is logged and skipped."""
    plugins: dict[str, Plugin] = {}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            plugins[point.name] = point.load()
        except Exception:  # a broken plugin must not take the other commands down
            log.warning("plugin %r (%s) cannot be loaded", point.name, point.value, exc_info=True)
    return plugins
