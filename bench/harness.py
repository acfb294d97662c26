"""What every figure shares: a RabbitMQ vhost of its own, side-by-side timing, memory, the table."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import redis

T = TypeVar("T")

RABBITMQ = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)
REDIS_CLAIM_KEY = "bus_tasks_bench_claim"  # in a database this run took for itself

# Listings measured whole, unpaged (query, selectivity, scale): up to the broker's own limit
# (RabbitMQ 3.x: 128 MiB), not the default max_reply_bytes.
UNPAGED_REPLY_BYTES = (128 << 20) - (1 << 20)


# -- targets and figures ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A bound on a ratio: ``ratio >= value`` (at least) or ``ratio <= value`` (at most)."""

    at_least: bool
    value: float

    def met(self, ratio: float) -> bool:
        return ratio >= self.value if self.at_least else ratio <= self.value

    def __str__(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.value:g}"


def at_least(value: float) -> Target:
    return Target(True, value)


def at_most(value: float) -> Target:
    return Target(False, value)


@dataclass(frozen=True, slots=True)
class Figure:
    """One line of the table: our figure, its baseline measured in the same run, and the target."""

    name: str
    ours: str
    baseline: str
    ratio: float
    target: Target | None  # None: a figure without a target, reported only (printed "-")
    sizes: str
    note: str = ""
    lost: bool = False  # a correctness failure alongside the figure (e.g. messages lost)

    @property
    def met(self) -> bool:
        """The target is met (a figure without one counts as met unless ``lost``)."""
        return (self.target is None or self.target.met(self.ratio)) and not self.lost


HEADER = ("figure", "ours", "baseline", "ratio", "target", "met", "sizes")


def row(figure: Figure) -> tuple[str, ...]:
    return (
        figure.name,
        figure.ours,
        figure.baseline,
        f"{figure.ratio:.4g}",
        "-" if figure.target is None else str(figure.target),
        ("yes" if figure.met else "NO") if figure.target is not None or figure.lost else "-",
        figure.sizes,
    )


def format_table(figures: list[Figure]) -> str:
    """A plain-text table, also valid Markdown, with notes under it."""
    rows = [HEADER, *(row(f) for f in figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(HEADER), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows[1:]]
    notes = [f"- {f.name}: {f.note}" for f in figures if f.note]
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def say(text: str) -> None:
    print(text, flush=True)


class HarnessError(RuntimeError):
    """Raised when a figure cannot be measured as intended (not when a target is missed)."""


def check(ok: bool, what: str) -> None:
    """Raises HarnessError(``what``) unless ``ok``: the measurement did not measure what it says."""
    if not ok:
        raise HarnessError(what)


# -- numbers --------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], share: float) -> float:
    """The sample at ``share`` (0..1) of ``values`` in order (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``fn`` took (``time.perf_counter``), and what it returned."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


@dataclass(frozen=True, slots=True)
class SideBySide:
    """Repeated measurements of two sides, taken alternately (A B, B A, A B ...)."""

    ours: list[float]
    baseline: list[float]

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.baseline, strict=True)]

    @property
    def ratio(self) -> float:
        """Median of the per-repetition ratios: drift of the machine between repetitions cancels."""
        return median(self.ratios)

    def spread(self) -> str:
        low, high = min(self.ratios), max(self.ratios)
        return f"ratios {low:.3g}..{high:.3g} over {len(self.ratios)} reps"


def side_by_side(ours: Callable[[], float], baseline: Callable[[], float], reps: int) -> SideBySide:
    """Run both measurements ``reps`` times, swapping which goes first each time.

    Each callable returns its own figure (seconds, or a rate) so that setup stays outside it.
    """
    a: list[float] = []
    b: list[float] = []
    for rep in range(reps):
        gc.collect()
        if rep % 2 == 0:
            a.append(ours())
            b.append(baseline())
        else:
            b.append(baseline())
            a.append(ours())
    return SideBySide(a, b)


def rate(count: int, seconds: float) -> float:
    return count / seconds


def fmt_rate(per_s: float, unit: str) -> str:
    return f"{per_s:,.0f} {unit}/s"


def fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def fmt_bytes(count: float) -> str:
    if count >= 1 << 20:
        return f"{count / (1 << 20):,.1f} MiB"
    return f"{count:,.0f} B"


# -- memory ---------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def retained_rss(build: Callable[[], T]) -> tuple[int, T]:
    """Bytes of resident memory that ``build`` leaves behind (what it returns keeps alive)."""
    gc.collect()
    before = rss_bytes()
    value = build()
    gc.collect()
    return rss_bytes() - before, value


class Child:
    """An object built and used in a fresh interpreter, so that its memory is measured alone.

    ``factory(*args)`` runs in the child; :meth:`call` runs one of its methods there and returns
    the (picklable) result. An error in the child is raised here with the child's traceback.
    """

    def __init__(self, factory: Callable[..., Any], *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(target=_child_main, args=(child_end, factory, args), daemon=True)
        self._process.start()
        child_end.close()
        self.result()

    def call(self, method: str, *args: Any) -> Any:
        self.send(method, *args)
        return self.result()

    def send(self, method: str, *args: Any) -> None:
        """Start ``method`` in the child without waiting: children run side by side."""
        self._pipe.send((method, args))

    def result(self) -> Any:
        """What the method started by :meth:`send` returned."""
        try:
            ok, value = self._pipe.recv()
        except EOFError:
            self._process.join(5.0)
            raise HarnessError(f"the child process died (exit code {self._process.exitcode})") from None
        if not ok:
            raise RuntimeError(f"in the child process:\n{value}")
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the child is already gone
            self._pipe.send(None)
        self._process.join(30.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)
        self._pipe.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child_main(pipe: Connection, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        obj = factory(*args)
        pipe.send((True, None))
    except BaseException:
        pipe.send((False, traceback.format_exc()))
        return
    while (request := pipe.recv()) is not None:
        method, call_args = request
        try:
            pipe.send((True, getattr(obj, method)(*call_args)))
        except BaseException:
            pipe.send((False, traceback.format_exc()))


# -- RabbitMQ -------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120, check=True)


def require_rabbitmq() -> None:
    """Raises RuntimeError when RabbitMQ or rabbitmqctl is missing: the figure cannot be measured."""
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError("rabbitmqctl is not on PATH: cannot make a vhost of our own")
    try:
        with socket.create_connection(RABBITMQ, timeout=2.0):
            pass
    except OSError as exc:
        raise RuntimeError(f"RabbitMQ is not reachable on {RABBITMQ[0]}:{RABBITMQ[1]}: {exc}") from None


@contextmanager
def rabbitmq_vhost(purpose: str) -> Iterator[str]:
    """An AMQP URL on a vhost made for this figure, deleted afterwards (also on failure)."""
    require_rabbitmq()
    vhost = f"bus_tasks_bench_{purpose}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


# -- Redis ----------------------------------------------------------------------------------


@contextmanager
def redis_db(purpose: str) -> Iterator[str]:
    """A ``redis://`` URL on a database of its own (an empty one, 1..15, claimed with a key so
    that two runs do not take the same), flushed afterwards (also on failure).

    A database of its own rather than kombu's ``global_keyprefix``: a prefix costs both sides
    a rewrite of every command, which a deployment without one does not pay.
    """
    claim = f"{purpose}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        client = redis.Redis(*REDIS, socket_connect_timeout=2.0)
        databases = int(client.config_get("databases").get("databases") or 16)
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis is not reachable on {REDIS[0]}:{REDIS[1]}: {exc}") from None
    for db in range(databases - 1, 0, -1):  # 0 is the default database: leave it to others
        candidate = redis.Redis(*REDIS, db=db)
        if candidate.dbsize() == 0 and candidate.set(REDIS_CLAIM_KEY, claim, nx=True):
            if candidate.dbsize() == 1:
                break
            candidate.delete(REDIS_CLAIM_KEY)  # someone else wrote there meanwhile
    else:
        raise RuntimeError("no empty Redis database to measure in (1..15 all hold keys)")
    try:
        yield f"redis://{REDIS[0]}:{REDIS[1]}/{db}"
    finally:
        if candidate.get(REDIS_CLAIM_KEY) == claim.encode():
            candidate.flushdb()


def wait_for(predicate: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``predicate`` until true; raises TimeoutError at ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:g}s")
        time.sleep(interval_s)


@dataclass(frozen=True, slots=True)
class Sizes:
    """The full size of a parameter and its ``--quick`` size."""

    full: int
    quick: int

    def pick(self, quick: bool) -> int:
        return self.quick if quick else self.full
