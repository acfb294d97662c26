"""Render the Grafana dashboard's panels as plots from a real Prometheus (Grafana is not packaged
here): docs/dashboard.png. Runs Debian's ``prometheus`` with a config of its own on a free port,
scraping the given ``serve --http`` targets (job="bus_tasks") with the alert and recording rules,
then asks its HTTP API each panel's queries over the run and plots them.

    python docs/monitoring/render_dashboard.py --target 127.0.0.1:8080 --target 127.0.0.1:8081 \
        --seconds 240 --out docs/dashboard.png

Needs matplotlib. The targets must be serving (and busy, to show anything) for the whole run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
SCRAPE_S = 2
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str) -> Any:
    with _NO_PROXY.open(url, timeout=30) as response:
        return json.loads(response.read())


def _config(targets: list[str], rules: Path) -> str:
    return json.dumps(
        {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "bus_tasks", "static_configs": [{"targets": targets}]}],
        }
    )  # JSON is YAML


def _query_range(api: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": SCRAPE_S})
    answer = _get(f"{api}/api/v1/query_range?{query}")
    if answer["status"] != "success":
        raise RuntimeError(f"{expr}: {answer}")
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def render(api: str, start: float, end: float, out: Path, window: str) -> list[str]:
    """Plot every panel of the dashboard (its ``[5m]`` ranges as ``window``: a run shorter than
    5 minutes would show rates still ramping up); the titles of the panels that had no data."""
    dashboard = json.loads((HERE / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    columns = 2
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(16, 3.2 * rows), squeeze=False)
    empty = []
    for index, panel in enumerate(panels):
        ax = axes[index // columns][index % columns]
        ax.set_title(panel["title"], fontsize=10, loc="left")
        drawn = 0
        for target in panel["targets"]:
            expr = target["expr"].replace("$instance", ".*").replace("[5m]", f"[{window}]")
            for series in _query_range(api, expr, start, end):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                label = _legend(target.get("legendFormat", ""), series["metric"])
                ax.plot(times, values, label=label, linewidth=1.2)
                drawn += 1
        if drawn:
            if drawn <= 16:
                ax.legend(fontsize=6, loc="upper left", ncol=2 if drawn > 6 else 1)
        else:
            empty.append(panel["title"])
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xlabel("seconds", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle(
        f"bus_tasks dashboard: each panel's queries over {end - start:.0f} s of a real Prometheus scrape"
        f" (ranges [{window}] for [5m])",
        fontsize=12,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(out, dpi=80)
    return empty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", required=True, help="HOST:PORT of a serve --http")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--out", type=Path, default=HERE.parent / "dashboard.png")
    parser.add_argument("--window", default="1m", help="the range of rate() etc. (default: %(default)s)")
    args = parser.parse_args(argv)
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        parser.error("prometheus is not installed (Debian package prometheus)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "prometheus.yml").write_text(_config(args.target, HERE / "bus_tasks.rules.yml"))
        port = _free_port()
        api = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [prometheus, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "prometheus.log").open("w"),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    _get(f"{api}/api/v1/status/buildinfo")
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise SystemExit((workdir / "prometheus.log").read_text()) from None
                    time.sleep(0.5)
            start = time.time()
            time.sleep(args.seconds)  # the scrape's duration, not synchronisation
            end = time.time()
            up = _get(f"{api}/api/v1/query?query=up")["data"]["result"]
            print("targets:", {s["metric"]["instance"]: s["value"][1] for s in up})
            empty = render(api, start, end, args.out, args.window)
        finally:
            process.terminate()
            process.wait(30)
    print(f"wrote {args.out}; panels without data: {empty or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
