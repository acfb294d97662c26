"""One soak: set up a vhost and a fault proxy, run the system under chaos while sampling it,
then check where every task is, judge the series and draw them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from support.faultproxy import FaultProxy

from soak import check, report, system
from soak.clients import WATCHES
from soak.growth import MIN_SAMPLES
from soak.sampler import broker_sample, process_sample

RABBITMQ = ("127.0.0.1", 5672)
SETTLE_TIMEOUT_S = 180.0
QUIESCE_TIMEOUT_S = 60.0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120, check=True)


class Soak:
    def __init__(self, seconds: float, sample_s: float, chaos_s: float) -> None:
        self.seconds = seconds
        self.sample_s = sample_s
        self.chaos_s = chaos_s
        self.vhost = f"bus_tasks_soak_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.direct = f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{self.vhost}"
        self.samples = report.Samples()
        self.problems: list[str] = []
        self.t0 = time.monotonic()
        self.stop = threading.Event()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def sample(self, system_: system.System) -> None:
        t = self.now()
        own = process_sample(os.getpid())
        children = [(c.series, c.pid) for c in system_.live()]
        totals = {"rss_mib": 0.0, "fds": 0.0, "threads": 0.0}
        for series, pid in [("soak#1", os.getpid()), *children]:
            found = own if pid == os.getpid() else process_sample(pid)
            if found is None:
                continue
            for kind, value in (("rss_mib", found.rss_mib), ("fds", found.fds), ("threads", found.threads)):
                self.samples.add(f"{series} {kind}", t, value)
                totals[kind] += value
        line = f"  t={t:6.0f}s  rss={totals['rss_mib']:7.1f} MiB  fds={totals['fds']:4.0f}  threads={totals['threads']:4.0f}"
        try:
            broker = broker_sample(self.vhost)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"{line}  broker: not sampled ({exc})", flush=True)
            return
        for queue, depth in broker.depths.items():
            self.samples.add(f"queue {queue} depth", t, depth)
        queued = sum(broker.depths.values())
        for kind, value in (("queued", queued), ("queues", broker.queues), ("connections", broker.connections),
                            ("stream", broker.stream_messages)):  # fmt: skip
            self.samples.add(f"broker {kind}", t, value)
        print(
            f"{line}  queued={queued}  queues={broker.queues}  connections={broker.connections}", flush=True
        )

    def sampler(self, system_: system.System) -> None:
        while True:
            self.sample(system_)
            if self.stop.wait(self.sample_s):
                return

    def run(self, plot: Path | None = None) -> int:
        rabbitmqctl("add_vhost", self.vhost)
        run_dir = Path(tempfile.mkdtemp(prefix="bus_tasks_soak_"))
        proxy = FaultProxy(RABBITMQ).start()
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{self.vhost}"
        sys_ = system.System(url, run_dir, proxy)
        print(f"soak: {self.seconds:g}s on vhost {self.vhost}, logs in {run_dir}", flush=True)
        try:
            rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
            sys_.start_all()
            self.t0 = time.monotonic()
            self.churn(sys_)
            self.finish(sys_)
        except (system.ChildFailed, subprocess.SubprocessError, OSError) as exc:
            self.problems.append(f"soak broke: {exc}")
        finally:
            self.stop.set()
            sys_.stop_all()
            proxy.close()
            rabbitmqctl("delete_vhost", self.vhost)
        events = [(t - self.t0, what) for t, what in sys_.events]
        return self.verdict(events, run_dir, plot)

    def churn(self, sys_: system.System) -> None:
        """Sample and make chaos for ``seconds``; stop early when a process dies."""
        sampling = threading.Thread(target=self.sampler, args=(sys_,), name="sampler", daemon=True)
        chaos_stop = threading.Event()
        chaos = threading.Thread(
            target=sys_.chaos,
            args=(chaos_stop, self.chaos_s, self.t0 + self.seconds),
            name="chaos",
            daemon=True,
        )
        sampling.start()
        chaos.start()
        while self.now() < self.seconds and not self.stop.wait(min(5.0, max(0.0, self.seconds - self.now()))):
            if exited := sys_.exited():
                self.problems += exited
                break
        chaos_stop.set()
        chaos.join(system.READY_TIMEOUT_S + 30)
        self.problems += sys_.exited()

    def finish(self, sys_: system.System) -> None:
        """Quiesce the callers, stop the subsystems, and check every task and every watcher."""
        clients = sys_.children["clients"]
        clients.signal(signal.SIGUSR1)
        clients.wait_for_line("quiesced", timeout_s=QUIESCE_TIMEOUT_S)
        self.wait_control_queues_empty()
        truth_files = {}
        for name in system.CHURNS:
            child = sys_.children[f"churn-{name}"]
            if child.stop() != 0:
                self.problems.append(f"{child.series} stopped with status {child.popen.returncode}")
            truth_files[name] = sys_.run_dir / name / "truth.json"
        sys_.children["simulate"].stop()
        truth = check.read_truth(truth_files)
        problems, listings = check.settle(
            self.direct, system.REPLICAS, truth, system.CHURNS,
            timeout_s=SETTLE_TIMEOUT_S, wait=self.stop.wait, clock=time.monotonic,
        )  # fmt: skip
        print(f"  end: {len(truth)} tasks in the subsystems; replicas list "
              f"{ {n: len(listing) for n, listing in listings.items()} }", flush=True)  # fmt: skip
        self.problems += problems[:30]
        clients.stop()
        result = json.loads((sys_.run_dir / "clients.json").read_text())
        print(f"  callers: {json.dumps(result['counts'], sort_keys=True)}", flush=True)
        self.problems += [f"client thread {name} did not stop" for name in result["stuck"]]
        self.problems += [
            f"{key}: see {clients.log_path}" for key in result["counts"] if key.endswith(".crashed")
        ]
        worked = {
            key.split(".")[0] for key, count in result["counts"].items() if key.endswith(".ok") and count
        }
        self.problems += [
            f"{name}: not one call succeeded"
            for name in ("poll-1", "poll-2", "clearer", "stomp-1", "stomp-2")
            if name not in worked
        ]
        if listings:
            self.problems += check.watcher_problems(result, listings[system.REPLICAS[0]], WATCHES)[:30]

    def wait_control_queues_empty(self) -> None:
        """The clears the callers made reach the subsystems before they stop (bounded)."""
        deadline = time.monotonic() + QUIESCE_TIMEOUT_S
        prefixes = tuple(f"bus_tasks.control.{name}" for name in system.CHURNS)
        while True:
            depths = broker_sample(self.vhost).depths
            waiting = {q: d for q, d in depths.items() if q in prefixes and d}
            if not waiting:
                return
            if time.monotonic() >= deadline:
                self.problems.append(f"control commands never taken: {waiting}")
                return
            self.stop.wait(1.0)

    def verdict(self, events: list[tuple[float, str]], run_dir: Path, plot: Path | None) -> int:
        rows = report.verdicts(self.samples, self.seconds)
        print(report.table(rows), flush=True)
        if plot is not None:
            title = f"bus_tasks soak: {self.seconds:g}s, sampled every {self.sample_s:g}s, chaos every {self.chaos_s:g}s"
            drawn = report.plot(self.samples, self.seconds, events, plot, title)
            print(
                f"plot: {plot}" if drawn else "plot: matplotlib is not installed (pip install '.[soak]')",
                flush=True,
            )
        self.problems += [f"{v.series} grows: {v.projected:+.1f} over the window (tolerance {v.tolerance:.1f})"
                          for v in rows if v.grows]  # fmt: skip
        if not any(v.judged for v in rows):  # the growth check would pass vacuously
            self.problems.append(
                f"no series could be judged: fewer than {MIN_SAMPLES} sampling rounds after warm-up"
                f" (sampling every {self.sample_s:g}s asked; rabbitmqctl slower on a loaded machine?)"
            )
        for what in self.problems:
            print(f"FAIL {what}", flush=True)
        if self.problems:
            print(f"soak failed; logs kept in {run_dir}", flush=True)
            return 1
        shutil.rmtree(run_dir, ignore_errors=True)
        print(
            f"soak passed: {sum(v.judged for v in rows)} series judged, {len(events)} chaos events",
            flush=True,
        )
        return 0
