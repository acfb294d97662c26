"""Gluster for tests: XML as the CLI prints it, a fake CLI executable, and a real glusterd."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from support.brokers import CI
from support.fixtures import fixture
from support.parallel import file_lock

FIXTURES = fixture("gluster/glusterVolumeTasks.xml").parent
CONNECTION_FAILED = "Connection failed. Please check if gluster daemon is operational."
GLUSTERD_START_S = 120.0  # a glusterd (re)started on a loaded machine answers late
# One glusterd per machine: a test run that uses it holds this lock, so a second run (another
# checkout's, CI's) waits instead of meeting a glusterd the first one stops. Shorter than a test's
# timeout, so a run that waits too long fails with the lock named.
GLUSTERD_LOCK = Path(tempfile.gettempdir()) / "bus_tasks-glusterd.lock"
GLUSTERD_LOCK_S = 300.0

# -- XML as the gluster CLI prints it -------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One task of ``volume status all tasks``."""

    volume: str
    kind: str  # "Rebalance", "Remove brick", "Replace brick"
    task_id: str
    status_str: str
    status: int = 1
    bricks: tuple[str, ...] = ()


def tasks_xml(tasks: Sequence[Task], *, volumes: Sequence[str] = ()) -> str:
    """A ``volume status all tasks --xml`` output listing ``tasks`` (and ``volumes`` without any)."""
    names = list(dict.fromkeys([*(t.volume for t in tasks), *volumes]))
    parts = []
    for name in names:
        listed = []
        for t in (t for t in tasks if t.volume == name):
            params = "".join(f"<brick>{escape(b)}</brick>" for b in t.bricks)
            listed.append(
                f"<task><type>{t.kind}</type><id>{t.task_id}</id><status>{t.status}</status>"
                f"<statusStr>{t.status_str}</statusStr>{f'<params>{params}</params>' if params else ''}</task>"
            )
        tasks_part = f"<tasks>{''.join(listed)}</tasks>" if listed else "<tasks/>"
        parts.append(f"<volume><volName>{name}</volName>{tasks_part}</volume>")
    return _envelope(f"<volStatus><volumes>{''.join(parts)}</volumes></volStatus>")


@dataclass(frozen=True)
class Node:
    name: str = "localhost"
    node_id: str = "883626f8-4d29-4d02-8c5d-c9f48c5b2445"
    files: int = 0
    size: int = 0
    lookups: int = 0
    failures: int = 0
    skipped: int = 0
    status: int = 1
    status_str: str = "in progress"
    runtime: str = "0.00"

    def counters_xml(self) -> str:
        return (
            f"<files>{self.files}</files><size>{self.size}</size><lookups>{self.lookups}</lookups>"
            f"<failures>{self.failures}</failures><skipped>{self.skipped}</skipped>"
            f"<status>{self.status}</status><statusStr>{self.status_str}</statusStr>"
            f"<runtime>{self.runtime}</runtime>"
        )


def migration_xml(element: str, task_id: str | None, nodes: Sequence[Node], aggregate: Node) -> str:
    """A ``<volRebalance>`` or ``<volRemoveBrick>`` status (or stop) output."""
    task = f"<task-id>{task_id}</task-id>" if task_id else ""
    listed = "".join(
        f"<node><nodeName>{n.name}</nodeName><id>{n.node_id}</id>{n.counters_xml()}</node>" for n in nodes
    )
    body = f"<{element}>{task}<nodeCount>{len(nodes)}</nodeCount>{listed}<aggregate>{aggregate.counters_xml()}</aggregate></{element}>"
    return _envelope(body)


def failed_xml(errstr: str, *, errno: int = 30800, body: str = "<volRemoveBrick/>") -> str:
    """A well-formed answer saying the command failed (glusterfs 10.3 may exit 0 with it)."""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<cliOutput><opRet>-1</opRet>'
        f"<opErrno>{errno}</opErrno><opErrstr>{escape(errstr)}</opErrstr>{body}</cliOutput>\n"
    )


def _envelope(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f"<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/>{body}</cliOutput>\n"
    )


# -- a fake gluster CLI, as VDSM's tests fake it ---------------------------------------------

_FAKE = """#!/bin/sh
# A fake gluster CLI: prints the answer stored for its arguments, or fails as a down glusterd does.
dir='{dir}'
printf '%s\\n' "$*" >> "$dir/calls"
if [ "$1" != "--mode=script" ]; then echo "fake gluster: --mode=script must come first" >&2; exit 64; fi
shift
key=$(printf '%s' "$*" | tr ' /:' '___')
if [ -f "$dir/$key.sleep" ]; then sleep "$(cat "$dir/$key.sleep")"; fi
if [ -f "$dir/$key" ]; then
    cat "$dir/$key"
    if [ -f "$dir/$key.rc" ]; then exit "$(cat "$dir/$key.rc")"; fi
    exit 0
fi
echo "{down}"
exit 1
"""


class FakeGluster:
    """An executable that answers each gluster command line with the text stored for it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.binary = directory / "gluster"
        self.binary.write_text(_FAKE.format(dir=directory, down=CONNECTION_FAILED))
        self.binary.chmod(0o755)

    def _key(self, args: str) -> Path:
        return self.directory / args.replace(" ", "_").replace("/", "_").replace(":", "_")

    def answer(self, args: str, text: str, *, rc: int = 0, sleep_s: float | None = None) -> None:
        """``gluster --mode=script ARGS`` prints ``text`` and exits ``rc`` (after ``sleep_s``)."""
        key = self._key(args)
        key.write_text(text)
        for suffix, value in ((".rc", rc or None), (".sleep", sleep_s)):
            extra = key.with_name(key.name + suffix)
            if value is None:
                extra.unlink(missing_ok=True)
            else:
                extra.write_text(str(value))

    def forget(self, args: str) -> None:
        """``ARGS`` fails from now on as with glusterd down."""
        self._key(args).unlink(missing_ok=True)

    def listing(self, tasks: Sequence[Task], *, volumes: Sequence[str] = ()) -> None:
        self.answer("volume status all tasks --xml", tasks_xml(tasks, volumes=volumes))

    @property
    def calls(self) -> list[str]:
        path = self.directory / "calls"
        return path.read_text().splitlines() if path.exists() else []


# -- a real glusterd ---------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    """Skip on a laptop; fail when CI is set (real-service tests must run there)."""
    if condition:
        return
    if CI:
        pytest.fail(f"{message} (CI is set: the gluster tests must run)")
    pytest.skip(message)


def _which(name: str) -> str | None:
    """A program's path, /usr/sbin included (where Debian puts glusterd, off a user's PATH)."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def gluster(*args: str, timeout_s: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``gluster --mode=script ARGS`` on the real glusterd."""
    done = subprocess.run(
        [_which("gluster") or "gluster", "--mode=script", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"gluster {' '.join(args)}: rc={done.returncode}\n{done.stdout}{done.stderr}")
    return done


def _answers() -> bool:
    try:
        return gluster("volume", "list", timeout_s=30.0, check=False).returncode == 0
    except subprocess.TimeoutExpired:  # a glusterd still starting may hold the CLI this long
        return False


@dataclass
class Glusterd:
    """The machine's glusterd; ``own`` when these tests started it (and may kill it)."""

    log_dir: Path
    own: bool = False
    process: subprocess.Popen[bytes] | None = None
    _starts: int = 0

    def start(self) -> None:
        self._starts += 1
        log = self.log_dir / f"glusterd-{self._starts}.log"
        self.process = subprocess.Popen(
            [_which("glusterd") or "glusterd", "--no-daemon", "-l", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.own = True
        deadline = time.monotonic() + GLUSTERD_START_S
        while not _answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"glusterd did not answer within {GLUSTERD_START_S:g}s; see {log}")
            time.sleep(0.2)  # polling for readiness, bounded by the deadline above

    def kill(self) -> None:
        """SIGKILL our glusterd (bricks, mounts and migrations keep running without it)."""
        assert self.own, "only a glusterd these tests started is killed"
        assert self.process is not None
        self.process.kill()
        self.process.wait(30.0)

    def stop(self) -> None:
        if self.own and self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30.0)


def glusterd_session(tmp_dir: Path) -> Iterator[Glusterd]:
    """A glusterd that answers: the running one, or one started (and stopped at the end) here."""
    _require(
        shutil.which("glusterd") is not None and shutil.which("gluster") is not None,
        "glusterfs-server is not installed (apt-get install -y glusterfs-server)",
    )
    _require(os.geteuid() == 0, "glusterd needs root")
    with file_lock(GLUSTERD_LOCK, GLUSTERD_LOCK_S):
        daemon = Glusterd(tmp_dir)
        if not _answers():
            daemon.start()
        try:
            yield daemon
        finally:
            daemon.stop()


@dataclass
class Volume:
    name: str
    root: Path
    mount: Path
    bricks: list[str] = field(default_factory=list)

    def brick(self, n: int) -> str:
        return f"{socket.gethostname()}:{self.root / f'b{n}'}"


class Volumes:
    """Makes started, mounted volumes in a temporary directory; removes every one at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[Volume] = []

    def create(self, files: int, *, bricks: int = 2, file_kib: int = 16) -> Volume:
        name = f"bt{uuid.uuid4().hex[:10]}"
        volume = Volume(name, self.root / name, self.root / name / "mnt")
        volume.mount.mkdir(parents=True)
        self.made.append(volume)
        volume.bricks = [volume.brick(n) for n in range(1, bricks + 1)]
        gluster("volume", "create", name, *volume.bricks, "force")
        gluster("volume", "start", name)
        subprocess.run(
            ["mount", "-t", "glusterfs", f"{socket.gethostname()}:/{name}", str(volume.mount)],
            check=True,
            timeout=60,
        )
        chunk = os.urandom(file_kib * 1024)
        for n in range(files):
            (volume.mount / f"f{n}").write_bytes(chunk)
        return volume

    def remove_all(self) -> None:
        for volume in reversed(self.made):
            subprocess.run(["umount", "-l", str(volume.mount)], capture_output=True, timeout=60, check=False)
            for brick in volume.bricks:  # a running remove-brick would block the stop
                gluster("volume", "remove-brick", volume.name, brick, "stop", check=False)
            gluster("volume", "stop", volume.name, "force", check=False)
            gluster("volume", "delete", volume.name, check=False)
            shutil.rmtree(volume.root, ignore_errors=True)
        self.made.clear()
