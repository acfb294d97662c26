"""The soak's growth rule (tests/soak/growth.py): a leak fails it, noise and plateaus do not."""

from __future__ import annotations

import math
import random

import pytest
from soak.growth import MIN_SAMPLES, Tolerance, Verdict, judge, slope

RSS = Tolerance(relative=0.10, floor=16.0)
WINDOW = (1200.0, 3600.0)  # the judged part of an hour, after warm-up
LAST_ROUND = 3600.0  # the run's last sampling round


def judged(series: str, points: list[tuple[float, float]], tolerance: Tolerance) -> Verdict:
    return judge(series, points, tolerance, window=WINDOW, last_round=LAST_ROUND)


def sampled(
    value_at: object, *, every_s: float = 5.0, seed: int = 7, noise: float = 0.0
) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    assert callable(value_at)
    return [
        (t, value_at(t) + rng.uniform(-noise, noise))
        for t in (i * every_s for i in range(int(3600 / every_s) + 1))
    ]


def test_slope_of_a_line_is_its_gradient() -> None:
    assert slope([(0, 1), (10, 21), (20, 41)]) == pytest.approx(2.0)


def test_slope_of_one_point_or_one_instant_is_zero() -> None:
    assert slope([(5, 3)]) == 0.0
    assert slope([(5, 3), (5, 9)]) == 0.0


def test_a_steady_leak_grows() -> None:
    # 60 MiB that leaks 1 MiB a minute: 40 MiB over the judged 40 minutes, noise of +-3 MiB.
    verdict = judged("rss", sampled(lambda t: 60 + t / 60, noise=3.0), RSS)
    assert verdict.judged
    assert verdict.grows
    assert verdict.projected == pytest.approx(40.0, rel=0.05)


def test_noise_around_a_level_does_not_grow() -> None:
    verdict = judged("rss", sampled(lambda t: 80.0, noise=10.0), RSS)
    assert verdict.judged
    assert not verdict.grows


def test_growth_that_levels_off_during_warm_up_does_not_grow() -> None:
    # Caches filling: fast at first, flat long before the window starts.
    verdict = judged("rss", sampled(lambda t: 50 + 30 * (1 - math.exp(-t / 200)), noise=1.0), RSS)
    assert not verdict.grows


def test_a_sawtooth_of_collections_does_not_grow() -> None:
    verdict = judged("rss", sampled(lambda t: 70 + (t % 300) / 300 * 12), RSS)
    assert not verdict.grows


def test_one_late_spike_does_not_grow() -> None:
    verdict = judged("fds", sampled(lambda t: 40 if t > 3590 else 10), Tolerance(0.0, 12))
    assert verdict.projected > 0
    assert not verdict.grows


def test_a_small_steady_rise_within_the_floor_does_not_grow() -> None:
    # A descriptor more every ten minutes: 4 over the window, under the floor of 12.
    verdict = judged("fds", sampled(lambda t: 20 + t // 600), Tolerance(0.0, 12))
    assert not verdict.grows


def test_a_count_that_climbs_past_the_floor_grows() -> None:
    verdict = judged("fds", sampled(lambda t: 20 + t // 60), Tolerance(0.0, 12))
    assert verdict.grows


def test_too_few_samples_are_reported_not_judged() -> None:
    # Alive throughout (a sample before the window and one in the last round), but sampled too rarely.
    times = [1000.0, *(1200.0 + 2400.0 * i / (MIN_SAMPLES - 2) for i in range(MIN_SAMPLES - 1))]
    points = [(t, 10.0 * i) for i, t in enumerate(times)]
    assert sum(WINDOW[0] <= t for t, _ in points) == MIN_SAMPLES - 1
    assert points[-1][0] == LAST_ROUND
    verdict = judged("fds", points, Tolerance(0.0, 1))
    assert not verdict.judged
    assert not verdict.grows


def test_a_process_that_started_within_the_window_is_reported_not_judged() -> None:
    # A replica restarted early in the window: its start-up climb, projected over the window,
    # would look like a leak.
    start = WINDOW[0] + 60.0
    points = [(t, 30 + (t - start)) for t, _ in sampled(lambda t: 0.0) if t >= start]
    verdict = judged("rss", points, RSS)
    assert verdict.samples >= MIN_SAMPLES
    assert not verdict.judged
    assert not verdict.grows


def test_a_process_killed_within_the_window_is_reported_not_judged() -> None:
    # Its series ends before the run's last round: it did not live through the window.
    points = [(t, 30 + t / 10) for t, _ in sampled(lambda t: 0.0) if t <= LAST_ROUND - 120.0]
    verdict = judged("rss", points, RSS)
    assert verdict.samples >= MIN_SAMPLES
    assert not verdict.judged
    assert not verdict.grows


def test_a_loaded_machine_sampling_slowly_and_unevenly_still_judges_and_catches_a_leak() -> None:
    # A short run (120 s, warm-up 42 s) where each round took 9-15 s: the samples cover less of
    # the window than on a quiet machine, but the process lived through it, so it is judged.
    rng = random.Random(3)
    times = [0.0]
    while (after := times[-1] + rng.uniform(9.0, 15.0)) <= 120.0:
        times.append(after)
    leak = [(t, 20.0 + t / 2) for t in times]  # one descriptor every 2 s
    verdict = judge("fds", leak, Tolerance(0.0, 12), window=(42.0, 120.0), last_round=times[-1])
    assert verdict.samples >= MIN_SAMPLES
    assert verdict.judged
    assert verdict.grows
