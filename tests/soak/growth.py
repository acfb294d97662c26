"""The growth rule: does a series sampled over the run grow without bound after warm-up? Pure.

A series passes unless, over the part of the run after warm-up, both hold:

- its least-squares trend, projected over that window, rises by more than the tolerance; and
- the median of the window's last third exceeds the median of its first third by more than half
  the tolerance (a sustained rise, not one late spike or a sawtooth that happens to tilt the fit).

The tolerance is ``max(relative x median level, absolute floor)``: relative for memory, whose
level is large, and a floor for counts (descriptors, threads, queue depth) that sit near zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

# The share of the run before the trend is judged: processes start, caches fill, tasks pile up.
WARM_UP_SHARE = 0.35
# A series needs this many samples in the window to be judged (fewer: reported, not judged).
MIN_SAMPLES = 6


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How much a series may rise over the judged window: ``max(relative * level, floor)``."""

    relative: float
    floor: float

    def of(self, level: float) -> float:
        return max(self.relative * abs(level), self.floor)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rule found for one series."""

    series: str
    samples: int
    first: float
    last: float
    level: float  # median over the window
    slope_per_min: float
    projected: float  # slope x window length
    rise: float  # median of the last third - median of the first third
    tolerance: float
    judged: bool

    @property
    def grows(self) -> bool:
        return self.judged and self.projected > self.tolerance and self.rise > self.tolerance / 2


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(t, value)`` points (0 for fewer than two distinct times)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def judge(
    series: str,
    points: Sequence[tuple[float, float]],
    tolerance: Tolerance,
    *,
    window: tuple[float, float],
    last_round: float,
) -> Verdict:
    """The verdict on ``points`` (``(t, value)``, t in seconds) within ``window`` = (start, end).

    Judged is a series with ``MIN_SAMPLES`` in the window whose process lived through all of it:
    sampled before the window began and in the run's last sampling round (at ``last_round``). A
    process the chaos killed or started meanwhile is shown, not judged: its own start-up would
    look like growth when projected over the window. Whole rounds count, not the share of the
    window the samples span, so that a loaded machine sampling slowly still judges every series
    that lived throughout.
    """
    start, end = window
    inside = sorted(p for p in points if start <= p[0] <= end)
    if not inside:
        return Verdict(series, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, tolerance.floor, judged=False)
    values = [v for _, v in inside]
    level = median(values)
    per_s = slope(inside)
    third = max(1, len(values) // 3)
    rise = median(values[-third:]) - median(values[:third])
    return Verdict(
        series=series,
        samples=len(inside),
        first=values[0],
        last=values[-1],
        level=level,
        slope_per_min=per_s * 60,
        projected=per_s * (end - start),
        rise=rise,
        tolerance=tolerance.of(level),
        judged=len(inside) >= MIN_SAMPLES
        and min(t for t, _ in points) < start
        and inside[-1][0] >= last_round,
    )
