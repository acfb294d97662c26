"""The soak's samples, its table, its plot and its verdict on growth (rule: soak/growth.py)."""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from pathlib import Path

from soak.growth import WARM_UP_SHARE, Tolerance, Verdict, judge

# Per metric: how much it may rise over the judged window (docs/soak.md explains the choice).
TOLERANCES = {
    "rss_mib": Tolerance(relative=0.10, floor=16.0),
    "fds": Tolerance(relative=0.0, floor=12),
    "threads": Tolerance(relative=0.0, floor=6),
    "depth": Tolerance(relative=0.0, floor=200),
    "queued": Tolerance(relative=0.0, floor=300),
    "queues": Tolerance(relative=0.0, floor=10),
    "connections": Tolerance(relative=0.0, floor=10),
}
# Sampled and drawn, never judged: a stream keeps every event until its retention by design.
INFORMATIONAL = frozenset({"stream"})


class Samples:
    """Series of ``(t, value)``, t in seconds since the soak started; thread-safe."""

    def __init__(self) -> None:
        self.series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, name: str, t: float, value: float) -> None:
        with self._lock:
            self.series[name].append((t, value))

    def snapshot(self) -> dict[str, list[tuple[float, float]]]:
        with self._lock:
            return {name: list(points) for name, points in self.series.items()}


def metric(name: str) -> str:
    return name.rsplit(" ", 1)[-1]


def verdicts(samples: Samples, seconds: float) -> list[Verdict]:
    """Every series sampled in ``[warm-up, seconds]``, judged unless it is informational or
    did not live through the window (a process the chaos restarted: see growth.judge)."""
    window = (WARM_UP_SHARE * seconds, seconds)
    snapshot = samples.snapshot()
    # The last round within the window (sampling goes on while the soak checks the tasks after it).
    last_round = max((t for points in snapshot.values() for t, _ in points if t <= seconds), default=0.0)
    out = []
    for name, points in sorted(snapshot.items()):
        kind = metric(name)
        tolerance = TOLERANCES.get(kind, Tolerance(0.0, 0.0))
        verdict = judge(name, points, tolerance, window=window, last_round=last_round)
        if kind in INFORMATIONAL or kind not in TOLERANCES:
            verdict = dataclasses.replace(verdict, judged=False)
        if verdict.samples:
            out.append(verdict)
    return out


def table(rows: list[Verdict]) -> str:
    header = ("series", "n", "first", "last", "median", "slope/min", "trend", "rise", "tolerance", "verdict")
    lines = [header]
    for v in rows:
        state = "GROWS" if v.grows else "ok" if v.judged else "-"
        lines.append(
            (v.series, str(v.samples), f"{v.first:.1f}", f"{v.last:.1f}", f"{v.level:.1f}",
             f"{v.slope_per_min:+.2f}", f"{v.projected:+.1f}", f"{v.rise:+.1f}", f"{v.tolerance:.1f}", state)
        )  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    )


def plot(samples: Samples, seconds: float, events: list[tuple[float, str]], path: Path, title: str) -> bool:
    """Draw the series in four panels to ``path``; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        ("resident memory (MiB)", "rss_mib"),
        ("open descriptors", "fds"),
        ("threads", "threads"),
        ("broker: messages queued / connections / queues", ("queued", "connections", "queues")),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 13), sharex=True)
    data = samples.snapshot()
    colors: dict[str, str] = {}  # one colour and one legend entry per role, whatever its restarts
    for axis, (label, kinds) in zip(axes, panels, strict=True):
        wanted = (kinds,) if isinstance(kinds, str) else kinds
        labelled: set[str] = set()
        for name, points in sorted(data.items()):
            if metric(name) not in wanted or name.startswith("queue "):
                continue
            role = name if name.startswith("broker") else name.split("#", 1)[0]
            color = colors.setdefault(role, f"C{len(colors) % 10}")
            xs, ys = [t / 60 for t, _ in points], [v for _, v in points]
            axis.plot(xs, ys, color=color, linewidth=1, label=None if role in labelled else role)
            labelled.add(role)
        axis.axvspan(0, WARM_UP_SHARE * seconds / 60, color="0.9", zorder=0)
        for t, what in events:
            axis.axvline(t / 60, color="red" if "SIGKILL" in what else "orange", linewidth=0.5, alpha=0.6)
        axis.set_ylabel(label)
        axis.legend(fontsize=6, ncol=4, loc="upper left")
    axes[-1].set_xlabel("minutes (grey: warm-up, not judged; red: SIGKILL; orange: connections dropped)")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True
