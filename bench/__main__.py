"""``python -m bench``: measure every figure against its baseline, print the table.

Exits 1 only when the harness fails (a figure could not be measured), never for a missed target.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from types import FrameType

from bench.harness import Figure, format_table, say

# Each figure's name (``--only``) and the module whose ``run(quick) -> list[Figure]`` measures
# it, in the order they run; a new figure is one more line here.
FIGURES = {
    "ingest": "bench.ingest",
    "core": "bench.core",
    "query": "bench.query",
    "listing": "bench.listing",
    "web": "bench.web_view",
    "selectivity": "bench.selectivity",
    "publish": "bench.publish",
    "scale": "bench.scale",
    "stomp": "bench.stomp",
    "replicas": "bench.replicas",
    "redis": "bench.on_redis",
    "watch": "bench.watch",
    "watch_onehop": "bench.watch.with_one_hop",
    "clients": "bench.clients",
    "restart": "bench.restart",
    "authz": "bench.authz",
    "tls_ingest": "bench.tls_ingest",
    "cluster": "bench.cluster",
}


# Asked for by name only: watch_onehop is figure 9 again with the one-hop prototype beside it
# (docs/watching.md), which doubles its time.
OPT_IN = frozenset({"watch_onehop"})


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=[name for name in FIGURES if name not in OPT_IN],
        help=f"comma-separated figures to run, in the standard order ({','.join(FIGURES)}); without"
        f" it, all but {','.join(sorted(OPT_IN))}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a figure")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figures {unknown}; choose among {','.join(FIGURES)}")
    args.only = [name for name in FIGURES if name in args.only]
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds the figure that runs, so its vhost and child processes are cleaned up.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    say(
        f"bus_tasks bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, python {platform.python_version()}, "
        f"{'quick' if args.quick else 'full'} sizes, figures: {','.join(args.only)}; "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}"
    )
    figures: list[Figure] = []
    failed: list[str] = []
    for name in args.only:
        say(f"== {name}")
        began = time.perf_counter()
        try:
            module = importlib.import_module(FIGURES[name])
            measured: list[Figure] = module.run(args.quick)
        except Exception:
            failed.append(name)
            say(f"!! {name} failed: the harness could not measure it")
            traceback.print_exc(file=sys.stdout)
            continue
        for figure in measured:
            say(f"   {figure.name}: ours {figure.ours}, baseline {figure.baseline}, ratio {figure.ratio:.4g}")
        figures.extend(measured)
        say(f"   ({time.perf_counter() - began:.0f}s)")
    say("")
    say(format_table(figures))
    say("")
    missed = [f.name for f in figures if not f.met]
    targeted = [f for f in figures if f.target is not None]
    say(
        f"{len(figures)} figures, {len(targeted) - len(missed)} of {len(targeted)} targets met"
        + (f", missed: {', '.join(missed)}" if missed else "")
        + (f"; harness FAILED for: {', '.join(failed)}" if failed else "")
        + f"; total {time.perf_counter() - started:.0f}s, load average at the end {os.getloadavg()[0]:.2f}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
