"""Plugins: packages that publish the tasks of one more subsystem (SPEC section 8).

A plugin registers an object under the entry-point group ``bus_tasks.plugins``; the name of the
entry point is the ``bus-tasks`` command that runs it. Installing the package is all it takes:
``bus-tasks`` lists every installed plugin among its commands.

The contract is typed and knows no command line: a plugin states its options as a
:class:`PluginOptions` model, and ``bus-tasks`` makes each field an option of its command
(``interval_s`` is ``--interval-s``, its description the help, its default the default), checks
the values, and calls :meth:`Plugin.run` with the model and a :class:`PluginHost`. A plugin runs
its subsystem with :class:`~bus_tasks.subsystem.runner.SubsystemRunner`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from bus_tasks.config import Settings
    from bus_tasks.subsystem.runner import Connect

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "bus_tasks.plugins"


class PluginOptions(BaseModel):
    """The options of a plugin's command, one field each; frozen, an unknown name refused.

    A field's ``description`` is its help; one ending in ``_s`` is a number of seconds.
    ``json_schema_extra={"metavar": "PATH"}`` names its value in the help.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class PluginHost:
    """What ``bus-tasks`` gives a plugin to run with."""

    settings: Settings
    stop: threading.Event  # set by SIGTERM or SIGINT: run returns soon after
    connect: Connect  # every broker connection of the plugin; waits for the broker end at ``stop``
    # Set by the plugin once it serves (its ready line logged): systemd's READY=1 follows it.
    ready: threading.Event = field(default_factory=threading.Event)


OptionsT = TypeVar("OptionsT", bound=PluginOptions)


class Plugin(Protocol[OptionsT]):
    """What ``bus-tasks`` needs of a plugin to run it as one of its commands."""

    summary: str  # one line for ``bus-tasks --help``
    options: type[OptionsT]  # the command's own options (``--broker`` and ``--log-level`` are added)

    def run(self, options: OptionsT, host: PluginHost) -> int:
        """Run until ``host.stop`` is set; returns the exit status.

        Raises:
            SubsystemTaken: when a live process owns the plugin's subsystem name.
        """
        ...


def installed() -> dict[str, Plugin[Any]]:
    """Every installed plugin by command name; one that cannot be loaded is logged and skipped."""
    plugins: dict[str, Plugin[Any]] = {}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            plugins[point.name] = point.load()
        except Exception:  # a broken plugin must not take the other commands down
            log.warning("plugin %r (%s) cannot be loaded", point.name, point.value, exc_info=True)
    return plugins
