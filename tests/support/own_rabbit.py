"""A RabbitMQ node of a test's own, on free loopback ports: its own config, plugins and users.

For what the shared node on 5672 must not be changed for (definitions imported, users, a TLS
listener with certificate login). ``OwnRabbit(tmp_path).start(config=..., plugins=[...])``,
``ctl("list_users")``, ``stop()``. Starting takes 5-10 s; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from support.ports import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
START_TIMEOUT_S = 60.0
CTL_TIMEOUT_S = 60.0


def available() -> bool:
    """Whether a RabbitMQ server is installed on this machine to start nodes of our own."""
    return SERVER.is_file() and CTL.is_file() and shutil.which("erl") is not None


class OwnRabbit:
    """One throwaway node under ``base`` (its home, data, logs and config), stopped by :meth:`stop`."""

    def __init__(self, base: Path, *, prefix: str = "bt-own", cookie: str = "") -> None:
        """``cookie``: the Erlang cookie the node shares with the nodes of its cluster (none of
        its own: Erlang makes one)."""
        self.base = base
        self.name = f"{prefix}-{os.getpid()}-{free_port()}@localhost"
        self.cookie = cookie
        self.port = free_port()  # plain AMQP
        self.tls_port = free_port()  # AMQP over TLS, when the config listens there
        self.dist_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The environment under which rabbitmq-server and rabbitmqctl mean this node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base / "home"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def start(self, *, config: str = "", plugins: tuple[str, ...] = ()) -> None:
        """Start the node with ``config`` (rabbitmq.conf text: ``{port}`` and ``{tls_port}`` are
        filled in) and ``plugins`` enabled; returns once it answers rabbitmqctl."""
        self.launch(config=config, plugins=plugins)
        self.await_started()

    def launch(self, *, config: str = "", plugins: tuple[str, ...] = ()) -> None:
        """Start the node's server process and return at once (see :meth:`await_started`)."""
        for sub in ("home", "mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        if self.cookie:
            cookie = self.base / "home" / ".erlang.cookie"
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
            + config.format(port=self.port, tls_port=self.tls_port)
        )
        (self.base / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n")
        self.relaunch()

    def relaunch(self) -> None:
        """Start the server process again, on the node's files as they are (after :meth:`kill`)."""
        output = (self.base / "server.out").open("ab")
        self._process = subprocess.Popen(
            [str(SERVER)], env=self.env(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        output.close()

    def await_started(self) -> None:
        """Return once the node answers rabbitmqctl (its applications running).

        Raises:
            RuntimeError: when the server process exited.
            TimeoutError: when it is not up within ``START_TIMEOUT_S`` (it is stopped).
        """
        assert self._process is not None, "launch() first"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited {self._process.returncode}: {self._tail()}")
            done = subprocess.run(
                [str(CTL), "await_startup", "--timeout", "5"],
                env=self.env(),
                capture_output=True,
                timeout=CTL_TIMEOUT_S,
                check=False,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"node {self.name} not up in {START_TIMEOUT_S} s: {self._tail()}")

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl ARGS`` against this node; its stdout.

        Raises:
            subprocess.CalledProcessError: when it fails (with its stderr).
        """
        done = subprocess.run(
            [str(CTL), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        return done.stdout

    def import_definitions(self, path: Path, *, vhost: str, users: set[str]) -> None:
        """``rabbitmqctl import_definitions PATH``, which only starts the import: returns once
        every one of ``users`` has its permissions on ``vhost``."""
        self.ctl("import_definitions", str(path))
        deadline = time.monotonic() + CTL_TIMEOUT_S
        while True:
            listed = {
                line.split("\t")[0] for line in self.ctl("list_permissions", "-s", "-p", vhost).splitlines()
            }
            if users <= listed:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"definitions not imported in {CTL_TIMEOUT_S} s: permissions of {sorted(listed)}"
                )
            time.sleep(0.2)  # polling rabbitmqctl, within the deadline

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """kill -9 of the node (its whole process group: the Erlang VM with it), as a crash."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, 9)
        process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the node (politely, then for good) and wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.ctl("stop")  # else killed below
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)

    def _tail(self) -> str:
        path = self.base / "server.out"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
