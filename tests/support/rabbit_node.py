"""A RabbitMQ node of the tests' own, beside the machine's shared broker (whose configuration
stays as it is): started from ``rabbitmq-server`` with its own HOME, node name, ports, data and
configuration, and stopped after.

The configuration is a parameter (``rabbitmq.conf`` text; ``{port}`` is filled in), so that a
test can have a broker with a small ``max_message_size``, and later ones a TLS node or a
cluster, from this one helper.

Safe under pytest-xdist: every node has a name of its own (``<prefix>-<pid>-<n>@localhost``),
its own directory, and ports that were free when it started (asked of the kernel, not fixed),
so several workers each start their own node without meeting; nothing is shared but epmd,
which keeps one entry per node name.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

SBIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
_numbers = itertools.count(1)


def available() -> bool:
    """Whether a node can be started here (RabbitMQ is installed)."""
    return (SBIN / "rabbitmq-server").is_file() and (SBIN / "rabbitmqctl").is_file()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RabbitNode:
    """A running node: its AMQP URL, and ``rabbitmqctl`` against it."""

    name: str
    port: int
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ctl(self, *args: str, timeout_s: float = 60.0, check: bool = True) -> str:
        """``rabbitmqctl -n NODE ARGS``; its output."""
        done = subprocess.run(
            [str(SBIN / "rabbitmqctl"), "-q", "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout

    def stop(self) -> None:
        """``rabbitmqctl stop``, then a kill if it is still there at the deadline."""
        if self.process.poll() is None:
            with suppress(subprocess.TimeoutExpired):  # killed below
                self.ctl("stop", timeout_s=STOP_TIMEOUT_S, check=False)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT_S)
        shutil.rmtree(self.home, ignore_errors=True)


def start_node(config: str, base_dir: Path, *, prefix: str = "bt-node") -> RabbitNode:
    """Start a node with ``config`` (``rabbitmq.conf`` text, ``{port}`` filled in) under
    ``base_dir``; returns once ``rabbitmqctl status`` answers and AMQP accepts connections.

    Raises:
        RuntimeError: when the node exits or does not answer within ``START_TIMEOUT_S``.
    """
    name = f"{prefix}-{os.getpid()}-{next(_numbers)}@localhost"
    port, dist_port = free_port(), free_port()
    home = base_dir / name.partition("@")[0]
    for sub in ("mnesia", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    config_file = home / "rabbitmq.conf"
    config_file.write_text(config.format(port=port))
    (home / "enabled_plugins").write_text("[].\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # its own Erlang cookie
        "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(config_file.with_suffix("")),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(home / "node.pid"),
    }
    log = (home / "server.out").open("wb")
    process = subprocess.Popen(
        [str(SBIN / "rabbitmq-server")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its Erlang children are killed with it
    )
    log.close()
    node = RabbitNode(name, port, home, env, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            output = (home / "server.out").read_text(errors="replace")[-2000:]
            node.stop()
            raise RuntimeError(f"rabbitmq node {name} exited ({process.returncode}): {output}")
        if _answers(node) and _accepts(port):
            return node
        if time.monotonic() >= deadline:
            node.stop()
            raise RuntimeError(f"rabbitmq node {name} did not start within {START_TIMEOUT_S:g}s")
        time.sleep(0.5)  # polling a starting process: the deadline above bounds it


@contextmanager
def running_node(config: str, base_dir: Path, *, prefix: str = "bt-node") -> Iterator[RabbitNode]:
    """A node for the span of a ``with`` block (see :func:`start_node`)."""
    node = start_node(config, base_dir, prefix=prefix)
    try:
        yield node
    finally:
        node.stop()


def _answers(node: RabbitNode) -> bool:
    try:
        node.ctl("status", timeout_s=20.0)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False
