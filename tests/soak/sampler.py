"""What the soak measures: each process's RSS, descriptors and threads (from /proc), the queues'
depths and the broker's connections in the soak's vhost (from ``rabbitmqctl``)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

RABBITMQCTL_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class ProcessSample:
    rss_mib: float
    fds: int
    threads: int


def process_sample(pid: int) -> ProcessSample | None:
    """The process's resident memory, open descriptors and threads; None once it is gone."""
    proc = Path("/proc") / str(pid)
    try:
        fields = dict(
            line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line
        )
        fds = len(os.listdir(proc / "fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    if fields.get("State", "").strip().startswith("Z"):
        return None  # a zombie's memory is gone; it only waits to be reaped
    rss_kib = int(fields["VmRSS"].split()[0])
    return ProcessSample(rss_mib=rss_kib / 1024, fds=fds, threads=int(fields["Threads"]))


def _rabbitmqctl(*args: str) -> list[list[str]]:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args, "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=RABBITMQCTL_TIMEOUT_S,
        check=True,
    )
    return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]


@dataclass(frozen=True, slots=True)
class BrokerSample:
    depths: dict[str, int]  # per queue, streams excepted (a stream keeps what is read, by design)
    stream_messages: int
    queues: int
    connections: int


def broker_sample(vhost: str) -> BrokerSample:
    """The vhost's queues (name, depth) and its client connections.

    Raises:
        subprocess.SubprocessError: when rabbitmqctl fails or hangs.
    """
    depths: dict[str, int] = {}
    stream = 0
    rows = _rabbitmqctl("list_queues", "-p", vhost, "name", "type", "messages")
    for name, kind, messages in (row for row in rows if len(row) == 3):
        count = int(messages) if messages.isdigit() else 0
        if kind == "stream":
            stream += count
        else:
            depths[name] = count
    connections = sum(1 for row in _rabbitmqctl("list_connections", "vhost") if row[0] == vhost)
    return BrokerSample(depths=depths, stream_messages=stream, queues=len(rows), connections=connections)
