"""``python -m soak --seconds N [--plot FILE]`` (from tests/, or with tests/ on PYTHONPATH)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soak.run import Soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the churn runs")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--chaos-s", type=float, default=None, help="seconds between faults")
    parser.add_argument("--plot", type=Path, default=None, help="draw the samples here (needs matplotlib)")
    args = parser.parse_args(argv)
    chaos_s = args.chaos_s or min(60.0, max(15.0, args.seconds / 6))
    soak = Soak(args.seconds, args.sample_s, chaos_s)
    return soak.run(plot=args.plot)


if __name__ == "__main__":
    sys.exit(main())
