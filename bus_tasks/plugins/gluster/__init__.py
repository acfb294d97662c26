"""The gluster plugin: gluster's tasks (rebalance, remove-brick, replace-brick) from its CLI.

Registered under the entry-point group ``bus_tasks.plugins`` as ``gluster``: ``bus-tasks gluster``
runs :data:`.plugin.plugin`.
Layers: :mod:`.xml` parses the CLI's XML (pure), :mod:`.mapping` maps it to task records
(pure), :mod:`.cli` runs the CLI with deadlines, :mod:`.poller` publishes what changed,
:mod:`.plugin` polls on the shared subsystem runner.
"""

from __future__ import annotations

from bus_tasks.plugins.gluster.cli import GlusterCli
from bus_tasks.plugins.gluster.poller import SUBSYSTEM, GlusterPoller

__all__ = ["SUBSYSTEM", "GlusterCli", "GlusterPoller"]
