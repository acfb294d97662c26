"""``--only watch_onehop``: figure 9 with the one-hop prototype's two rows beside it (docs/watching.md,
"Why two hops, not one"). Not in the default run: it doubles figure 9's time, and the prototype's
reader, attached through the latency rotation, receives every event of the other sides too."""

from __future__ import annotations

from bench.harness import Figure
from bench.watch import figures


def run(quick: bool) -> list[Figure]:
    return figures(quick, one_hop=True)
