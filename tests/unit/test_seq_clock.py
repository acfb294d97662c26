"""SeqClock: event seqs strictly increase, across threads and across restarts (SPEC section 4)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bus_tasks.subsystem.seq import SeqClock

WALL_NS = 1_700_000_000_000_000_000  # a fixed wall clock, in nanoseconds
WALL_US = WALL_NS // 1000


class WallClock:
    """A ``time.time_ns`` the test moves by hand."""

    def __init__(self, now_ns: int = WALL_NS) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    clock = WallClock()
    monkeypatch.setattr(time, "time_ns", clock)
    return clock


def draw(clock: SeqClock, count: int) -> list[int]:
    return [clock.next() for _ in range(count)]


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def test_seq_follows_the_wall_clock_in_microseconds(wall: WallClock) -> None:
    assert SeqClock().next() == WALL_US


def test_seq_is_strictly_increasing_when_the_clock_stands_still(wall: WallClock) -> None:
    assert draw(SeqClock(), 5) == [WALL_US, WALL_US + 1, WALL_US + 2, WALL_US + 3, WALL_US + 4]


def test_seq_keeps_increasing_when_the_clock_steps_back(wall: WallClock) -> None:
    clock = SeqClock()
    first = draw(clock, 3)
    wall.now_ns -= 3_600 * 10**9
    assert draw(clock, 3) == [first[-1] + 1, first[-1] + 2, first[-1] + 3]


def test_seq_jumps_forward_with_the_clock(wall: WallClock) -> None:
    clock = SeqClock()
    clock.next()
    wall.now_ns += 5 * 10**9
    assert clock.next() == WALL_US + 5_000_000


def test_seq_is_strictly_increasing_over_many_calls_on_the_real_clock() -> None:
    values = draw(SeqClock(), 20_000)
    assert strictly_increasing(values)
    assert values[0] > 0


def test_seq_is_unique_and_increasing_per_thread_across_threads() -> None:
    clock = SeqClock()
    per_thread: list[list[int]] = [[] for _ in range(8)]
    start = threading.Barrier(len(per_thread))

    def work(out: list[int]) -> None:
        start.wait(timeout=10)
        out.extend(draw(clock, 5_000))

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    assert all(strictly_increasing(values) and len(values) == 5_000 for values in per_thread)
    every = [v for values in per_thread for v in values]
    assert len(set(every)) == len(every)


# -- across restarts ---------------------------------------------------------------------


def test_a_new_clock_on_the_same_file_continues_above_the_previous_one_when_the_wall_clock_is_behind(
    wall: WallClock, tmp_path: Path
) -> None:
    path = tmp_path / "seq"
    before = draw(SeqClock(path), 100)
    wall.now_ns -= 24 * 3_600 * 10**9  # the host comes back a day in the past

    after = draw(SeqClock(path), 100)

    assert strictly_increasing(before + after)


def test_every_generation_of_clocks_continues_above_the_last(wall: WallClock, tmp_path: Path) -> None:
    path = tmp_path / "seq"
    used: list[int] = []
    for _ in range(4):
        used += draw(SeqClock(path, lease=50), 120)  # more than a lease per generation
        wall.now_ns -= 10**9
    assert strictly_increasing(used)


def test_the_file_holds_a_lease_above_every_value_handed_out(wall: WallClock, tmp_path: Path) -> None:
    path = tmp_path / "seq"
    clock = SeqClock(path, lease=1_000)
    values = draw(clock, 10)
    assert int(path.read_text()) == WALL_US + 1_000
    assert int(path.read_text()) > max(values)


def test_the_lease_is_renewed_when_the_clock_passes_it(wall: WallClock, tmp_path: Path) -> None:
    path = tmp_path / "seq"
    clock = SeqClock(path, lease=1_000)
    clock.next()
    wall.now_ns += 2_000 * 1_000  # 2000 microseconds later, past the lease
    value = clock.next()
    assert value == WALL_US + 2_000
    assert int(path.read_text()) == value + 1_000


def test_a_clock_on_an_empty_file_starts_from_the_wall_clock(wall: WallClock, tmp_path: Path) -> None:
    path = tmp_path / "seq"
    path.write_text("")
    assert SeqClock(path).next() == WALL_US


def test_a_clock_with_a_path_is_strictly_increasing_across_threads(tmp_path: Path) -> None:
    clock = SeqClock(tmp_path / "seq", lease=2_000)
    results: list[list[int]] = [[] for _ in range(4)]
    work: Callable[[list[int]], None] = lambda out: out.extend(draw(clock, 2_000))  # noqa: E731
    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    every = [v for values in results for v in values]
    assert len(set(every)) == len(every) == 8_000
    assert all(strictly_increasing(values) for values in results)
    assert int((tmp_path / "seq").read_text()) > max(every)
