"""``make fuzz``: every target under atheris (libFuzzer) for ``FUZZ_S`` seconds, keeping what it finds.

    PYTHONPATH=tests python -m fuzz.run [--seconds S] [--targets a,b] [--max-len N]

For each target: the kept corpus (``tests/fuzz/corpus/<target>/``) is topped up with the target's
seeds; a run of S seconds grows a scratch corpus from it; a merge (libFuzzer's ``-merge=1``) then
keeps only the inputs that add coverage, so the corpus stays small. A crash (any exception but the
parser's typed errors), a hang (``-timeout``) or running out of memory is written to
``tests/fuzz/crashers/<target>/``; the exit status is 1 when any run found one. A table of what
libFuzzer reported (executions, exec/s, coverage) closes the run.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
TESTS_DIR = FUZZ_DIR.parent
FINDINGS = ("crash-", "timeout-", "oom-", "leak-")
DEFAULT_MAX_LEN = 8192  # past 4300 digits, int() refuses a number: inputs must be able to get there
WRAPPER_ENV = "FUZZ_WRAPPER"  # how libFuzzer starts this target again (its -merge runs a child)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_PROGRESS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+)", re.MULTILINE)


@dataclass
class Outcome:
    """What one target's run came to."""

    target: str
    executions: int = 0
    exec_per_s: int = 0
    coverage: int = 0  # libFuzzer's cov: edges (here: Python branches) reached
    features: int = 0  # libFuzzer's ft:
    corpus: int = 0  # inputs kept after the merge
    findings: tuple[str, ...] = ()


def _work(target: str, libfuzzer_args: list[str]) -> None:
    """Run ``target`` under atheris with ``libfuzzer_args``; libFuzzer exits the process."""
    import atheris  # the fuzz extra (make fuzz installs it)

    # The dispatcher logs every bad call at warning: only its crashes (errors) matter here.
    logging.basicConfig(level=logging.ERROR, handlers=[logging.NullHandler()])
    with atheris.instrument_imports(include=["bus_tasks", "tomllib", "yarl"]):
        from fuzz import targets  # imported instrumented, for coverage feedback
    argv0 = os.environ.get(WRAPPER_ENV, sys.argv[0])
    atheris.Setup([argv0, *libfuzzer_args], targets.TARGETS[target])
    atheris.Fuzz()


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token)


def _prepare(target: str, work: Path) -> tuple[Path, Path, Path, Path]:
    """The kept corpus topped up with the seeds, the crashers' folder, a dictionary and a wrapper."""
    from fuzz.seeds import dictionary, seeds  # not in the instrumented worker

    corpus = FUZZ_DIR / "corpus" / target
    crashers = FUZZ_DIR / "crashers" / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashers.mkdir(parents=True, exist_ok=True)
    for seed in seeds(target):
        path = corpus / hashlib.sha1(seed).hexdigest()  # libFuzzer's own naming
        if not path.exists():
            path.write_bytes(seed)
    words = work / "dictionary"
    words.write_text("".join(f'"{_escape(token)}"\n' for token in dictionary(target)))
    wrapper = work / "target"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m fuzz.run --worker {target} -- "$@"\n')
    wrapper.chmod(0o755)
    return corpus, crashers, words, wrapper


def _libfuzzer(wrapper: Path, args: list[str], log: Path, timeout_s: float) -> int:
    env = {**os.environ, WRAPPER_ENV: str(wrapper), "PYTHONPATH": str(TESTS_DIR)}
    with log.open("wb") as out:
        try:
            return subprocess.run(
                [str(wrapper), *args], stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout_s,
                check=False,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            out.write(b"\nfuzz.run: libFuzzer did not stop in time\n")
            return 124


def run_target(target: str, seconds: int, max_len: int) -> Outcome:
    """Fuzz ``target`` for ``seconds``, merge what it found into its kept corpus."""
    outcome = Outcome(target)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
        work = Path(tmp)
        corpus, crashers, words, wrapper = _prepare(target, work)
        before = {p.name for p in crashers.iterdir()}
        scratch, merged = work / "scratch", work / "merged"
        scratch.mkdir()
        merged.mkdir()
        log = work / "fuzz.log"
        code = _libfuzzer(
            wrapper,
            [str(scratch), str(corpus), f"-max_total_time={seconds}", f"-max_len={max_len}",
             f"-dict={words}", f"-artifact_prefix={crashers}/", "-timeout=10", "-rss_limit_mb=2048",
             "-print_final_stats=1"],
            log,
            timeout_s=seconds + 300,
        )  # fmt: skip
        text = log.read_text(errors="replace")
        stats = {name: int(value) for name, value in _STAT.findall(text)}
        progress = _PROGRESS.findall(text)
        if progress:
            outcome.coverage, outcome.features = int(progress[-1][1]), int(progress[-1][2])
        outcome.executions = stats.get("number_of_executed_units", 0)
        outcome.exec_per_s = stats.get("average_exec_per_sec", 0)
        outcome.findings = tuple(
            sorted(p.name for p in crashers.iterdir() if p.name not in before and p.name.startswith(FINDINGS))
        )
        if code != 0 and not outcome.findings:  # stopped early (or hung), but wrote nothing down
            outcome.findings = (f"exit-{code}",)
        if outcome.findings:
            sys.stdout.write(text[-6000:])  # the traceback
        merge_log = work / "merge.log"
        merge_code = _libfuzzer(
            wrapper, ["-merge=1", f"-max_len={max_len}", "-timeout=10", str(merged), str(corpus), str(scratch)],
            merge_log, timeout_s=600,
        )  # fmt: skip
        if merge_code == 0 and any(merged.iterdir()):
            shutil.rmtree(corpus)
            shutil.copytree(merged, corpus)
        else:
            sys.stdout.write(f"{target}: merge failed ({merge_code}); corpus left as it was\n")
            sys.stdout.write(merge_log.read_text(errors="replace")[-3000:])
        outcome.corpus = sum(1 for _ in corpus.iterdir())
    return outcome


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _work(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    from fuzz.targets import TARGETS

    if argv[:1] == ["--replay"]:  # --replay TARGET FILE...: the traceback of each, as the suite sees it
        for path in argv[2:]:
            print(f"{argv[1]} {path}", flush=True)
            TARGETS[argv[1]](Path(path).read_bytes())
        return 0

    parser = argparse.ArgumentParser(prog="make fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="per target (FUZZ_S)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated (FUZZ_TARGETS)")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN)
    args = parser.parse_args(argv)
    names = [name for name in args.targets.split(",") if name]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    outcomes = []
    for name in names:
        print(f"fuzz {name}: {args.seconds}s ...", flush=True)
        outcomes.append(run_target(name, args.seconds, args.max_len))
    print(f"\n{'target':<14}{'execs':>12}{'exec/s':>9}{'cov':>7}{'ft':>8}{'corpus':>8}  findings")
    for o in outcomes:
        listed = ", ".join(o.findings) or "-"
        print(
            f"{o.target:<14}{o.executions:>12}{o.exec_per_s:>9}{o.coverage:>7}{o.features:>8}{o.corpus:>8}  {listed}"
        )
    found = [
        f"{o.target}: libFuzzer stopped with {f} (its log above)" if f.startswith("exit-")
        else f"tests/fuzz/crashers/{o.target}/{f}"
        for o in outcomes
        for f in o.findings
    ]  # fmt: skip
    if found:
        print(
            "\nfound (replay: PYTHONPATH=tests python -m fuzz.run --replay TARGET FILE):\n  "
            + "\n  ".join(found)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
