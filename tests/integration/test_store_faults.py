"""A store that fails under a running ``bus-tasks serve``: full, read-only, garbage, locked, away.

Each test runs ``bus-tasks serve`` as a separate process on the real RabbitMQ (its own vhost).
A store that cannot take writes pauses ingest (the events stay unacked in the broker), RPC goes
on answering from the view, and ingest resumes by itself once the store is back; one warning is
logged per change of state. SIGTERM stops serve cleanly in every phase.

The file-system faults need root (a tmpfs of a few MiB, filled or remounted read-only); they
skip without it, and fail under CI.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.brokers import CI, Broker, admin_of
from support.ports import free_port
from support.processes import BIN, Process, without_start_warnings
from support.streams import SUBSYSTEMS, expected_view, start_stream, visible

from bus_tasks import names, transport
from bus_tasks.client import TasksClient
from bus_tasks.errors import BusTasksError
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import wait_until
from bus_tasks.transport import BusOptions, TopologyOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# These tests watch the depth of the aggregator's events queue (a backlog building, draining,
# held while the store fails): they run the queue layout (event_log = "queue"), every process
# of them; the stream layout's restarts and kills are test_replicas.py's and test_durability.py's.
QUEUE_LAYOUT = TopologyOptions(event_log="queue")


@pytest.fixture(autouse=True)
def queue_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_TASKS_EVENT_LOG", "queue")  # serve and the publisher processes


PAUSED = "ingest paused"
RESUMED = "ingest resumed"
READY = "aggregator ready"
STOPPED = "aggregator stopped"
STOP_TIMEOUT_S = 20.0
BLOB = "x" * 2000  # per task: 300 of them are far more than a full tmpfs has left


# -- helpers ------------------------------------------------------------------------------


def _serve(
    cleanup: contextlib.ExitStack, url: str, data_dir: Path, *, ready: bool = True, **env: str
) -> Process:
    """``bus-tasks serve`` as a process of its own (killed by ``cleanup``), once ready if ``ready``."""
    process = Process(
        [str(BIN / "bus-tasks"), "serve", "--broker", url, "--data-dir", str(data_dir)],
        env={**os.environ, "BUS_TASKS_LOG_LEVEL": "INFO", **env},
    )
    cleanup.callback(process.kill)
    if ready:
        process.wait_for_line(READY, timeout_s=30)
    return process


def _count(process: Process, text: str) -> int:
    return sum(text in line for line in process.lines)


def _assert_stops_cleanly(process: Process) -> None:
    """SIGTERM: exit 0 within STOP_TIMEOUT_S, "aggregator stopped", no traceback."""
    status = process.terminate(timeout_s=STOP_TIMEOUT_S)
    log = process.log
    assert status == 0, log
    assert STOPPED in log, log
    assert "Traceback" not in log, log
    assert "Cannot operate on a closed database" not in log, log


def _events_queue(broker: Broker) -> tuple[int, int]:
    """(ready, unacked) messages of the aggregator's events queue, as RabbitMQ counts them."""
    vhost = broker.url.rsplit("/", 1)[1]
    listed = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "--no-table-headers",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for line in listed.splitlines():
        fields = line.split()
        if fields and fields[0] == names.EVENTS_QUEUE:
            return int(fields[1]), int(fields[2])
    raise AssertionError(f"{names.EVENTS_QUEUE} is not in the vhost {vhost}: {listed!r}")


def _wait_queue(broker: Broker, want: Callable[[int, int], bool], what: str, timeout_s: float = 60) -> None:
    wait_until(lambda: want(*_events_queue(broker)), timeout_s=timeout_s, interval_s=0.2, what=what)


def _publisher(broker: Broker) -> TaskPublisher:
    return TaskPublisher(
        transport.open(broker.url, BusOptions(confirm_publish=True, topology=QUEUE_LAYOUT)), "vdsm"
    )


def _client(broker: Broker) -> TasksClient:
    return TasksClient(transport.open(broker.url, BusOptions(topology=QUEUE_LAYOUT)), timeout_s=10)


Listing = dict[str, tuple[str, Any]]  # task id: (state, progress)


def _states(client: TasksClient) -> Listing:
    return {i: (t["state"], t["progress"]) for i, t in client.get_all_tasks().items()}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (skips without root, fails under CI)."""
    if os.geteuid() != 0 and not CI:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        message = f"cannot mount a tmpfs on {path}: {done.stderr.strip()}"
        if CI:
            pytest.fail(f"{message} (CI is set: this test must run)")
        pytest.skip(message)
    try:
        yield path
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))  # still busy: detach it, the kernel frees it later


def _remount(path: Path, options: str) -> None:
    done = _run("mount", "-o", f"remount,{options}", str(path))
    assert done.returncode == 0, f"mount -o remount,{options} {path}: {done.stderr.strip()}"


def _fill(fs: Path) -> Path:
    """Write a file until the file system is full (ENOSPC); returns its path."""
    filler = fs / "filler"
    chunk = bytes(1 << 16)
    failure: OSError | None = None
    with filler.open("wb", buffering=0) as out:
        while failure is None:
            try:
                out.write(chunk)
            except OSError as exc:
                failure = exc
    assert failure.errno == errno.ENOSPC, failure
    assert os.statvfs(fs).f_bavail == 0
    return filler


def _redis_client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1.0, socket_timeout=5.0)


def _redis_up(port: int) -> bool:
    client = _redis_client(port)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _start_redis(port: int, cwd: Path) -> Process:
    """A redis-server of this test's own on ``port``, keeping nothing on disk, once it answers."""
    server = Process(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        cwd=cwd,
    )
    try:
        wait_until(
            lambda: server.popen.poll() is not None or _redis_up(port),
            timeout_s=20,
            interval_s=0.05,
            what=f"redis-server on port {port}",
        )
    except BaseException:
        server.kill()
        raise
    assert server.popen.poll() is None, f"redis-server exited {server.popen.poll()}: {server.log}"
    return server


def _serve_on_redis(
    cleanup: contextlib.ExitStack, url: str, data_dir: Path, port: int, prefix: str, *, ready: bool = True
) -> Process:
    """serve with its store in the Redis on ``port``, under ``prefix``."""
    return _serve(
        cleanup,
        url,
        data_dir,
        ready=ready,
        BUS_TASKS_STORE="redis",
        BUS_TASKS_STORE_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        BUS_TASKS_STORE_KEY_PREFIX=prefix,
    )


def _stored_ids(port: int, prefix: str) -> set[str]:
    client = _redis_client(port)
    try:
        return {
            k.decode() if isinstance(k, bytes) else k for k in client.hkeys(prefix + names.STORE_TASKS_KEY)
        }
    finally:
        client.close()


def _require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        if CI:
            pytest.fail("redis-server is not installed (CI is set: this test must run)")
        pytest.skip("redis-server is not installed")


# -- a full data directory ----------------------------------------------------------------


def test_a_full_data_directory_pauses_ingest_and_it_resumes_by_itself_when_space_is_freed(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as cleanup:
        fs = cleanup.enter_context(_tmpfs(tmp_path / "fs"))
        serve = _serve(cleanup, rabbitmq_broker.url, fs / "data")
        pub = _publisher(rabbitmq_broker)
        cleanup.callback(pub.close)
        client = cleanup.enter_context(_client(rabbitmq_broker))

        first = [pub.create("copyImage", ["spm"], state="running").id for _ in range(20)]
        pub.finish(first[0])
        pub.flush(30)
        want: Listing = dict.fromkeys(first[1:], ("running", None)) | {first[0]: ("finished", None)}
        wait_until(lambda: _states(client) == want, timeout_s=30, what="the first 20 tasks listed")
        _wait_queue(rabbitmq_broker, lambda ready, unacked: ready == unacked == 0, "first events acked")

        filler = _fill(fs)
        for task in first[1:]:
            pub.update(task, progress=50)
        second = [
            pub.create("copyImage", ["spm"], state="running", data={"blob": BLOB}).id for _ in range(300)
        ]
        pub.flush(30)
        published_since = len(first[1:]) + len(second)

        serve.wait_for_line(PAUSED, timeout_s=30)
        assert serve.popen.poll() is None, serve.log
        # RPC answers from the view meanwhile: it already has the events no store took.
        wait_until(
            lambda: len(client.get_all_tasks()) > len(first), timeout_s=30, what="RPC answering while paused"
        )
        with pytest.raises(BusTasksError) as refused:
            client.clear_task(first[0])
        assert refused.value.code == 100, refused.value
        assert first[0] in client.get_all_tasks()
        # Nothing of what came since the disk filled was acked: the broker still holds it all.
        _wait_queue(
            rabbitmq_broker,
            lambda ready, unacked: ready + unacked == published_since and unacked > 0,
            "every event since the disk filled held unacked",
        )

        filler.unlink()
        serve.wait_for_line(RESUMED, timeout_s=30)
        want = (
            {first[0]: ("finished", None)}
            | dict.fromkeys(first[1:], ("running", 50))
            | dict.fromkeys(second, ("running", None))
        )
        wait_until(lambda: _states(client) == want, timeout_s=60, what="every task in its final state")
        _wait_queue(rabbitmq_broker, lambda ready, unacked: ready == unacked == 0, "every event acked")
        assert client.clear_task(first[0]) is True  # writable again: a clear is taken
        assert first[0] not in client.get_all_tasks()

        _assert_stops_cleanly(serve)
        assert _count(serve, PAUSED) == 1, serve.log
        assert _count(serve, RESUMED) == 1, serve.log


# -- a read-only data directory -----------------------------------------------------------


def test_a_read_only_data_directory_pauses_ingest_and_it_resumes_when_writable_again(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    # `mount -o remount,ro` is refused (EBUSY) while a process holds a file of the file system
    # open for writing, and serve holds its lock file (and SQLite its files) open for its whole
    # life. So the directory is made read-only while serve is down, and the lock file, which is
    # no part of the store, is kept outside the tmpfs (data/lock is a symlink to it).
    with contextlib.ExitStack() as cleanup:
        fs = cleanup.enter_context(_tmpfs(tmp_path / "fs"))
        data_dir = fs / "data"
        data_dir.mkdir()
        (tmp_path / "lock").touch()
        (data_dir / "lock").symlink_to(tmp_path / "lock")
        pub = _publisher(rabbitmq_broker)
        cleanup.callback(pub.close)
        client = cleanup.enter_context(_client(rabbitmq_broker))

        serve = _serve(cleanup, rabbitmq_broker.url, data_dir)
        first = [pub.create("copyImage", ["spm"], state="running").id for _ in range(10)]
        for task in first[:5]:
            pub.finish(task)
        pub.flush(30)
        want: Listing = dict.fromkeys(first[:5], ("finished", None)) | dict.fromkeys(
            first[5:], ("running", None)
        )
        wait_until(lambda: _states(client) == want, timeout_s=30, what="the first 10 tasks listed")
        _assert_stops_cleanly(serve)

        _remount(fs, "ro")
        # Events published while the directory is read-only wait in the broker.
        for task in first[5:]:
            pub.update(task, progress=70)
        second = [pub.create("copyImage", ["spm"], state="running").id for _ in range(10)]
        pub.flush(30)
        want |= dict.fromkeys(first[5:], ("running", 70)) | dict.fromkeys(second, ("running", None))

        serve = _serve(cleanup, rabbitmq_broker.url, data_dir, ready=False)
        serve.wait_for_line(PAUSED, timeout_s=30)
        assert serve.popen.poll() is None, serve.log
        assert READY not in serve.log  # no view, no ingest: nothing is consumed, nothing acked
        assert _events_queue(rabbitmq_broker) == (15, 0)

        _remount(fs, "rw")
        serve.wait_for_line(RESUMED, timeout_s=30)
        serve.wait_for_line("loaded 10 tasks and 0 tombstones", timeout_s=30)
        serve.wait_for_line(READY, timeout_s=30)
        wait_until(lambda: _states(client) == want, timeout_s=30, what="every task in its final state")
        _wait_queue(rabbitmq_broker, lambda ready, unacked: ready == unacked == 0, "every event acked")
        assert client.clear_task(first[0]) is True
        assert first[0] not in client.get_all_tasks()

        _assert_stops_cleanly(serve)
        assert _count(serve, PAUSED) == 1, serve.log
        assert _count(serve, RESUMED) == 1, serve.log


# -- a file that is not a database, a data directory in use -------------------------------


def test_a_sqlite_file_that_is_not_a_database_stops_serve_with_one_clear_line(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    garbage = b"this is not a SQLite database\n" * 200
    (data_dir / "view.sqlite3").write_bytes(garbage)
    with contextlib.ExitStack() as cleanup:
        # At WARNING, as an operator would run it: the error is all there is to read.
        serve = _serve(cleanup, rabbitmq_broker.url, data_dir, ready=False, BUS_TASKS_LOG_LEVEL="WARNING")
        status = serve.popen.wait(30)
        serve.kill()  # reaps it and joins its reader: every line is in
    assert status == 1, serve.log
    lines = without_start_warnings(serve.lines)
    assert len(lines) == 1, serve.log
    (line,) = lines
    assert line.startswith("bus-tasks serve: error 100: store sqlite "), line
    assert str(data_dir / "view.sqlite3") in line, line
    assert "file is not a database" in line, line
    assert "Traceback" not in serve.log
    assert (data_dir / "view.sqlite3").read_bytes() == garbage  # left for the operator to look at


def test_a_second_serve_on_the_same_data_directory_is_refused_and_a_killed_one_leaves_no_stale_lock(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    url = rabbitmq_broker.url
    data_dir = tmp_path / "data"
    with contextlib.ExitStack() as cleanup:
        pub = _publisher(rabbitmq_broker)
        cleanup.callback(pub.close)
        client = cleanup.enter_context(_client(rabbitmq_broker))
        first = _serve(cleanup, url, data_dir)
        task = pub.create("copyImage", ["spm"], state="running").id
        pub.flush(30)
        wait_until(lambda: task in client.get_all_tasks(), timeout_s=30, what="the task listed")

        second = _serve(cleanup, url, data_dir, ready=False)
        assert second.popen.wait(30) == 1, second.log
        second.kill()  # reaps it and joins its reader: every line is in
        refusal = f"is in use by another bus-tasks serve (pid {first.popen.pid})"
        assert any(refusal in line for line in second.lines), second.log
        assert "Traceback" not in second.log
        assert first.popen.poll() is None
        assert task in client.get_all_tasks()  # the one holding the directory is undisturbed

        first.kill()  # SIGKILL: no cleanup of its own
        third = _serve(cleanup, url, data_dir)
        third.wait_for_line("loaded 1 tasks", timeout_s=5)
        assert (data_dir / "lock").read_text() == f"pid {third.popen.pid}\n"
        assert _states(client) == {task: ("running", None)}
        _assert_stops_cleanly(third)


# -- a Redis store that goes away -----------------------------------------------------------


def test_a_redis_store_that_goes_away_pauses_ingest_and_serve_catches_up_when_it_returns(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    _require_redis_server()
    port = free_port()
    prefix = f"bus_tasks_test:{uuid.uuid4().hex[:12]}:"
    url = rabbitmq_broker.url
    with contextlib.ExitStack() as cleanup:
        store = _start_redis(port, tmp_path)
        cleanup.callback(store.kill)
        serve = _serve_on_redis(cleanup, url, tmp_path / "data", port, prefix)
        pub = _publisher(rabbitmq_broker)
        cleanup.callback(pub.close)
        client = cleanup.enter_context(_client(rabbitmq_broker))

        first = [pub.create("copyImage", ["spm"], state="running").id for _ in range(20)]
        pub.flush(30)
        want: Listing = dict.fromkeys(first, ("running", None))
        wait_until(lambda: _states(client) == want, timeout_s=30, what="the first 20 tasks listed")
        assert _stored_ids(port, prefix) == set(first)  # a listing is answered once its events are stored

        store.kill()  # SIGKILL: the Redis is gone, and it kept nothing
        pub.finish(first[0])
        for task in first[1:10]:
            pub.update(task, progress=50)
        second = [pub.create("copyImage", ["spm"], state="running").id for _ in range(100)]
        pub.flush(30)
        changed = set(first[:10]) | set(second)
        want |= {first[0]: ("finished", None)} | dict.fromkeys(first[1:10], ("running", 50))
        want |= dict.fromkeys(second, ("running", None))

        serve.wait_for_line(PAUSED, timeout_s=30)
        assert serve.popen.poll() is None, serve.log
        wait_until(
            lambda: _states(client) == want, timeout_s=30, what="RPC answering from the view while paused"
        )
        with pytest.raises(BusTasksError) as refused:
            client.clear_task(first[0])
        assert refused.value.code == 100, refused.value
        _wait_queue(
            rabbitmq_broker,
            lambda ready, unacked: ready + unacked == 110 and unacked > 0,
            "every event since Redis went away held unacked",
        )

        store = _start_redis(port, tmp_path)  # the same port, empty
        cleanup.callback(store.kill)
        serve.wait_for_line(RESUMED, timeout_s=30)
        _wait_queue(rabbitmq_broker, lambda ready, unacked: ready == unacked == 0, "every event acked")
        assert _states(client) == want
        stored = _stored_ids(port, prefix)
        # What was not stored when Redis went away was written when it came back; what had been
        # stored before went with that Redis (it kept nothing): resync would heal it.
        assert changed <= stored, sorted(changed - stored)
        _assert_stops_cleanly(serve)
        assert _count(serve, PAUSED) == 1, serve.log
        assert _count(serve, RESUMED) == 1, serve.log

        again = _serve_on_redis(cleanup, url, tmp_path / "data", port, prefix)
        again.wait_for_line(f"loaded {len(stored)} tasks", timeout_s=5)
        listed = _states(client)
        assert {i: listed.get(i) for i in changed} == {i: want[i] for i in changed}
        _assert_stops_cleanly(again)


def test_serve_waits_for_a_redis_store_that_is_down_at_start_and_is_ready_once_it_is_up(
    rabbitmq_broker: Broker, tmp_path: Path
) -> None:
    _require_redis_server()
    port = free_port()
    prefix = f"bus_tasks_test:{uuid.uuid4().hex[:12]}:"
    with contextlib.ExitStack() as cleanup:
        serve = _serve_on_redis(cleanup, rabbitmq_broker.url, tmp_path / "data", port, prefix, ready=False)
        serve.wait_for_line(PAUSED, timeout_s=30)
        assert serve.popen.poll() is None, serve.log
        assert READY not in serve.log

        store = _start_redis(port, tmp_path)
        cleanup.callback(store.kill)
        serve.wait_for_line(RESUMED, timeout_s=30)
        serve.wait_for_line(READY, timeout_s=30)
        pub = _publisher(rabbitmq_broker)
        cleanup.callback(pub.close)
        client = cleanup.enter_context(_client(rabbitmq_broker))
        tasks = [pub.create("copyImage", ["spm"], state="running").id for _ in range(5)]
        pub.flush(30)
        wait_until(lambda: set(client.get_all_tasks()) == set(tasks), timeout_s=30, what="5 tasks listed")
        assert _stored_ids(port, prefix) == set(tasks)
        _assert_stops_cleanly(serve)
        assert _count(serve, PAUSED) == 1, serve.log
        assert _count(serve, RESUMED) == 1, serve.log


# -- SIGTERM in every phase -----------------------------------------------------------------

BACKLOG_TASKS = 2000  # per publisher process, 5 events each: 2 x 10,000 events
BACKLOG_UPDATES = 3


def _stop_while_the_disk_is_full(broker: Broker, tmp_path: Path, cleanup: contextlib.ExitStack) -> None:
    fs = cleanup.enter_context(_tmpfs(tmp_path / "fs"))
    serve = _serve(cleanup, broker.url, fs / "data")
    pub = _publisher(broker)
    cleanup.callback(pub.close)
    for _ in range(5):
        pub.create("copyImage", ["spm"], state="running")
    pub.flush(30)
    _wait_queue(broker, lambda ready, unacked: ready == unacked == 0, "the first events acked")
    _fill(fs)
    for _ in range(300):
        pub.create("copyImage", ["spm"], state="running", data={"blob": BLOB})
    pub.flush(30)
    serve.wait_for_line(PAUSED, timeout_s=30)
    _assert_stops_cleanly(serve)
    assert "stopping with the store unavailable" in serve.log, serve.log
    # None was acked: all of them are back in the queue, for the next serve.
    _wait_queue(broker, lambda ready, unacked: (ready, unacked) == (300, 0), "300 events back in the queue")


def _stop_while_redis_is_away(broker: Broker, tmp_path: Path, cleanup: contextlib.ExitStack) -> None:
    _require_redis_server()
    port = free_port()
    prefix = f"bus_tasks_test:{uuid.uuid4().hex[:12]}:"
    store = _start_redis(port, tmp_path)
    cleanup.callback(store.kill)
    serve = _serve_on_redis(cleanup, broker.url, tmp_path / "data", port, prefix)
    store.kill()
    pub = _publisher(broker)
    cleanup.callback(pub.close)
    for _ in range(50):
        pub.create("copyImage", ["spm"], state="running")
    pub.flush(30)
    serve.wait_for_line(PAUSED, timeout_s=30)
    _assert_stops_cleanly(serve)
    assert "stopping with the store unavailable" in serve.log, serve.log
    _wait_queue(broker, lambda ready, unacked: (ready, unacked) == (50, 0), "50 events back in the queue")


def _stop_while_waiting_for_redis_at_start(
    broker: Broker, tmp_path: Path, cleanup: contextlib.ExitStack
) -> None:
    port = free_port()  # nothing listens there
    serve = _serve_on_redis(cleanup, broker.url, tmp_path / "data", port, "bus_tasks_test:", ready=False)
    serve.wait_for_line(PAUSED, timeout_s=30)
    assert READY not in serve.log
    _assert_stops_cleanly(serve)


def _stop_while_draining_a_backlog(broker: Broker, tmp_path: Path, cleanup: contextlib.ExitStack) -> None:
    url = broker.url
    data_dir = tmp_path / "data"
    _assert_stops_cleanly(_serve(cleanup, url, data_dir))  # declares the events queue, then goes
    publishers = [
        start_stream(url, subsystem, tasks=BACKLOG_TASKS, updates=BACKLOG_UPDATES) for subsystem in SUBSYSTEMS
    ]
    for publisher in publishers:
        cleanup.callback(publisher.kill)
    for publisher in publishers:
        assert publisher.popen.wait(120) == 0, publisher.log
    backlog = 2 * BACKLOG_TASKS * (BACKLOG_UPDATES + 2)
    assert _events_queue(broker) == (backlog, 0)

    serve = _serve(cleanup, url, data_dir)
    monitor = transport.open(url, BusOptions(topology=QUEUE_LAYOUT))
    cleanup.callback(monitor.close)
    # Falling by more than what is prefetched: some events were stored and acked already.
    wait_until(
        lambda: admin_of(monitor).queue_size(names.EVENTS_QUEUE) < backlog - 1000,
        timeout_s=30,
        interval_s=0.005,
        what="the backlog draining",
    )
    serve.popen.send_signal(signal.SIGTERM)
    _assert_stops_cleanly(serve)
    _wait_queue(broker, lambda ready, unacked: unacked == 0, "the unacked events back in the queue")
    left, _ = _events_queue(broker)
    assert 0 < left < backlog, f"SIGTERM did not land while the backlog drained ({left} left)"

    serve = _serve(cleanup, url, data_dir)
    want = expected_view(BACKLOG_TASKS)
    with TasksClient(transport.open(url, BusOptions(topology=QUEUE_LAYOUT)), timeout_s=30) as client:
        wait_until(
            lambda: {i: visible(t) for i, t in client.get_all_tasks().items()} == want,
            timeout_s=60,
            interval_s=0.2,
            what="every task of the backlog in its final state",
        )
    _wait_queue(broker, lambda ready, unacked: ready == unacked == 0, "the whole backlog acked")
    _assert_stops_cleanly(serve)


PHASES: dict[str, Callable[[Broker, Path, contextlib.ExitStack], None]] = {
    "while_the_disk_is_full": _stop_while_the_disk_is_full,
    "while_redis_is_away": _stop_while_redis_is_away,
    "while_waiting_for_redis_at_start": _stop_while_waiting_for_redis_at_start,
    "while_draining_a_backlog": _stop_while_draining_a_backlog,
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_sigterm_stops_serve_cleanly_in_every_phase(
    rabbitmq_broker: Broker, tmp_path: Path, phase: str
) -> None:
    with contextlib.ExitStack() as cleanup:
        PHASES[phase](rabbitmq_broker, tmp_path, cleanup)
