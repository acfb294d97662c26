"""The STOMP front door against hostile clients (SPEC 18): each bound with a real client over a
real socket, closing the one that misbehaves within it while a well-behaved client's call answers
within a second."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
import trustme
from support.brokers import System
from support.vdsm_stomp import RawVdsmClient

from bus_tasks import codec
from bus_tasks.core.model import State
from bus_tasks.frontdoors.stomp.frames import Frame, FrameParser
from bus_tasks.frontdoors.stomp.running import RunningFrontDoor
from bus_tasks.frontdoors.stomp.server import StompLimits
from bus_tasks.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CONNECT_TIMEOUT_S = 0.5
MARGIN_S = 3.0  # generous: the machine is shared
ANSWER_S = 1.0  # a well-behaved client's call, meanwhile
LOGGER = "bus_tasks.frontdoors.stomp"

DoorFactory = Callable[..., RunningFrontDoor]


@pytest.fixture
def start_door(rabbitmq_system: System) -> Iterator[DoorFactory]:
    """``start_door(limits, ssl_context=None)``: a front door to the system's aggregator."""
    with ExitStack() as stack:

        def start(limits: StompLimits, ssl_context: ssl.SSLContext | None = None) -> RunningFrontDoor:
            connection = rabbitmq_system.broker.connection(confirm_publish=False)
            door = RunningFrontDoor(connection, timeout_s=10.0, ssl_context=ssl_context, limits=limits)
            return stack.enter_context(door)

        yield start


@pytest.fixture
def clients() -> Iterator[ExitStack]:
    """Closes every client and socket a test opened."""
    with ExitStack() as stack:
        yield stack


def good_client(
    clients: ExitStack, door: RunningFrontDoor, ssl_context: ssl.SSLContext | None = None
) -> RawVdsmClient:
    """A connected client whose calls must answer within ``ANSWER_S``."""
    client = RawVdsmClient(door.port, ssl_context=ssl_context)
    clients.callback(client.close)
    assert client.connect().command == "CONNECTED"
    client.timeout_s = ANSWER_S
    return client


def answers(client: RawVdsmClient) -> None:
    """A call of ``client`` is answered (within its ``timeout_s``) with a result."""
    assert isinstance(client.call("Host.getAllTasksStatuses")["result"], dict)


def raw_socket(clients: ExitStack, port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
    clients.callback(sock.close)
    return sock


def closed_within(sock: socket.socket | ssl.SSLSocket, timeout_s: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout_s`` (what it sends before is read)."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False
    return False


def peer(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def logged(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    return [line for line in lines if all(part in line for part in parts)]


# -- connect timeout ------------------------------------------------------------------------


def test_connections_without_connect_are_closed_by_the_connect_timeout_while_others_answer(
    start_door: DoorFactory, clients: ExitStack
) -> None:
    door = start_door(StompLimits(connect_timeout_s=CONNECT_TIMEOUT_S))
    good = good_client(clients, door)
    silent = raw_socket(clients, door.port)
    trickler = raw_socket(clients, door.port)
    opened = time.monotonic()
    answers(good)
    # One byte of a CONNECT at a time, never a whole frame: it is closed all the same.
    closed = False
    for byte in b"CONNECT\naccept-version:1.2\n" * 4:
        try:
            trickler.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if closed_within(trickler, 0.05):
            closed = True
            break
    assert closed
    assert time.monotonic() - opened < CONNECT_TIMEOUT_S + MARGIN_S
    assert closed_within(silent, CONNECT_TIMEOUT_S + MARGIN_S - (time.monotonic() - opened))
    answers(good)
    wait_until(lambda: door.door.sessions == 1, timeout_s=MARGIN_S, what="only the good client left")
    assert door.door.refusals == {"connect_timeout": 2}  # counted for its metrics


def test_a_client_that_connects_in_time_stays_past_the_connect_timeout(
    start_door: DoorFactory, clients: ExitStack
) -> None:
    door = start_door(StompLimits(connect_timeout_s=CONNECT_TIMEOUT_S))
    client = good_client(clients, door)
    assert not closed_within(client.sock, CONNECT_TIMEOUT_S * 3)
    answers(client)


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    """A throwaway CA and the server context of a certificate it signed, requiring client certs."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return ca, context


def client_context(ca: trustme.CA, *, certificate: trustme.CA | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if certificate is not None:
        certificate.issue_cert("engine.example").configure_cert(context)
    return context


def test_tls_connections_without_a_handshake_or_a_connect_are_closed_by_the_connect_timeout(
    start_door: DoorFactory,
    clients: ExitStack,
    tls: tuple[trustme.CA, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    ca, server_context = tls
    door = start_door(StompLimits(connect_timeout_s=CONNECT_TIMEOUT_S), server_context)
    good = good_client(clients, door, ssl_context=client_context(ca, certificate=ca))
    no_handshake = raw_socket(clients, door.port)
    shaken = client_context(ca, certificate=ca).wrap_socket(
        raw_socket(clients, door.port), server_hostname="localhost"
    )
    clients.callback(shaken.close)
    answers(good)
    assert closed_within(no_handshake, CONNECT_TIMEOUT_S + MARGIN_S)
    assert closed_within(shaken, CONNECT_TIMEOUT_S + MARGIN_S)
    answers(good)
    [line] = logged(caplog, peer(no_handshake))
    assert f"TLS handshake failed: not done within {CONNECT_TIMEOUT_S:g}s" in line
    [line] = logged(caplog, peer(shaken))
    assert f"closed: no CONNECT within {CONNECT_TIMEOUT_S:g}s" in line
    assert door.door.refusals == {"connect_timeout": 2}


@pytest.mark.parametrize("issuer", ["none", "another-ca"])
def test_a_refused_client_certificate_is_one_log_line_with_the_peer_address(
    start_door: DoorFactory,
    clients: ExitStack,
    tls: tuple[trustme.CA, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
    issuer: str,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    ca, server_context = tls
    door = start_door(StompLimits(), server_context)
    good = good_client(clients, door, ssl_context=client_context(ca, certificate=ca))
    certificate = trustme.CA() if issuer == "another-ca" else None
    refused = RawVdsmClient(door.port, ssl_context=client_context(ca, certificate=certificate), timeout_s=5.0)
    clients.callback(refused.close)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        refused.connect()
    address = peer(refused.sock)
    wait_until(lambda: logged(caplog, address), timeout_s=5.0, what="the refusal logged")
    [line] = logged(caplog, address)
    assert "TLS handshake failed" in line
    assert door.door.refusals == {"tls_handshake": 1}
    answers(good)


# -- heart-beat silence ---------------------------------------------------------------------


def test_a_client_silent_past_twice_its_heart_beat_is_closed_and_one_that_beats_is_not(
    start_door: DoorFactory, clients: ExitStack
) -> None:
    door = start_door(StompLimits())
    good = good_client(clients, door)
    silent = RawVdsmClient(door.port, heartbeat="1000,0")
    clients.callback(silent.close)
    beating = RawVdsmClient(door.port, heartbeat="1000,0")
    clients.callback(beating.close)
    assert silent.connect().headers["heart-beat"] == "0,1000"
    assert beating.connect().headers["heart-beat"] == "0,1000"
    connected = time.monotonic()
    while time.monotonic() - connected < 3.0:  # past twice its heart-beat, beating every 0.4 s
        beating.send_raw(b"\n")
        assert not beating.closed_by_server(timeout_s=0.4)
    assert silent.closed_by_server(timeout_s=2.0 + MARGIN_S - (time.monotonic() - connected))
    assert door.door.refusals == {"heartbeat": 1}
    answers(good)
    beating.timeout_s = ANSWER_S
    answers(beating)


# -- connections ----------------------------------------------------------------------------


def test_a_connection_over_the_cap_gets_an_error_frame_and_is_closed_and_its_slot_comes_back(
    start_door: DoorFactory, clients: ExitStack
) -> None:
    door = start_door(StompLimits(max_connections=3))
    good = good_client(clients, door)
    second = good_client(clients, door)
    good_client(clients, door)
    over = raw_socket(clients, door.port)
    parser = FrameParser()
    frames: list[Frame] = []
    while not frames:
        data = over.recv(65536)
        assert data, "closed without an ERROR frame"
        frames += parser.feed(data)
    assert (frames[0].command, frames[0].headers) == (
        "ERROR",
        {"message": "too many connections (at most 3)"},
    )
    assert closed_within(over, MARGIN_S)
    assert door.door.refusals == {"connections": 1}
    answers(good)
    second.close()
    wait_until(lambda: door.door.sessions == 2, timeout_s=MARGIN_S, what="the second client gone")
    answers(good_client(clients, door))


# -- requests in flight ---------------------------------------------------------------------


def test_a_request_over_max_pending_is_answered_at_once_with_too_many_requests(
    start_door: DoorFactory, clients: ExitStack, rabbitmq_system: System
) -> None:
    release = threading.Event()
    stopped: list[str] = []

    def stop(task_id: str) -> None:  # holds its answer, so the stops stay in flight
        release.wait(30.0)
        stopped.append(task_id)

    vdsm = rabbitmq_system.publisher("vdsm", listen=True)
    vdsm.on_stop(stop)
    tasks = [vdsm.create("copyImage", ["spm"], state=State.RUNNING).id for _ in range(2)]
    lister = rabbitmq_system.client()
    wait_until(lambda: len(lister.get_all_tasks()) == 2, timeout_s=10, what="the tasks listed")
    door = start_door(StompLimits(max_pending=2))
    good = good_client(clients, door)
    busy = good_client(clients, door)
    try:
        for number, task_id in enumerate(tasks):
            body = codec.dumps(
                [{"jsonrpc": "2.0", "method": "Task.stop", "params": {"taskID": task_id}, "id": number}]
            )
            busy.send_request(body)
        wait_until(lambda: door.door.pending == 2, timeout_s=5.0, what="two stops in flight")
        reply = busy.call("Host.getAllTasksStatuses")
        assert reply["error"] == {
            "code": -32013,
            "message": "Too many requests in flight: Host.getAllTasksStatuses not sent, at most 2 per connection",
        }
        answers(good)
        assert door.door.over_pending == 1
    finally:
        release.set()
    busy.timeout_s = 10.0
    replies = [codec.loads(busy.read_frame().body)[0] for _ in tasks]
    assert sorted((r["id"], r["result"]) for r in replies) == [(0, True), (1, True)]
    assert sorted(stopped) == sorted(tasks)
    answers(busy)


# -- a client that stops reading ------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
def test_a_client_that_stops_reading_is_dropped_at_max_outbuf_bytes(
    *,
    start_door: DoorFactory,
    clients: ExitStack,
    rabbitmq_system: System,
    caplog: pytest.LogCaptureFixture,
    tls: tuple[trustme.CA, ssl.SSLContext],
    secure: bool,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    ca, server_context = tls
    client_tls = client_context(ca, certificate=ca) if secure else None
    vdsm = rabbitmq_system.publisher("vdsm")
    for _ in range(100):
        vdsm.create("copyImage", ["spm"], state=State.RUNNING, data={"padding": "x" * 200})
    lister = rabbitmq_system.client()
    wait_until(lambda: len(lister.get_all_tasks()) == 100, timeout_s=30, what="the tasks listed")
    limits = StompLimits(max_outbuf_bytes=32 * 1024, max_pending=1000)
    door = start_door(limits, server_context if secure else None)
    good = good_client(clients, door, client_tls)
    tcp = socket.socket()
    clients.callback(tcp.close)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    tcp.settimeout(10.0)
    tcp.connect(("127.0.0.1", door.port))
    hostile = client_tls.wrap_socket(tcp, server_hostname="localhost") if client_tls else tcp
    clients.callback(hostile.close)
    request = codec.dumps([{"jsonrpc": "2.0", "method": "Host.getAllTasks", "params": {}, "id": 1}])
    send = (
        f"SEND\ndestination:jms.topic.vdsm_requests\nreply-to:r\ncontent-length:{len(request)}\n\n".encode()
        + request
        + b"\x00"
    )
    # Some 14 MB of replies asked for (more than the kernel's buffers hold), none read.
    hostile.sendall(b"CONNECT\naccept-version:1.2\n\n\x00SUBSCRIBE\nid:1\ndestination:r\n\n\x00" + send * 200)
    wait_until(
        lambda: logged(caplog, peer(hostile), "bytes of replies wait unread"), timeout_s=30, what="dropped"
    )
    assert door.door.refusals == {"outbuf": 1}
    answers(good)
    wait_until(lambda: door.door.sessions == 1, timeout_s=MARGIN_S, what="only the good client left")
    assert closed_within(hostile, 30.0)


# -- frames before a malformed one ------------------------------------------------------------


def test_frames_before_a_malformed_one_in_the_same_write_are_processed_before_the_error(
    start_door: DoorFactory, clients: ExitStack, rabbitmq_system: System
) -> None:
    stopped: list[str] = []
    vdsm = rabbitmq_system.publisher("vdsm", listen=True)
    vdsm.on_stop(stopped.append)
    task_id = vdsm.create("copyImage", ["spm"], state=State.RUNNING).id
    lister = rabbitmq_system.client()
    wait_until(lambda: task_id in lister.get_all_tasks(), timeout_s=10, what="the task listed")
    door = start_door(StompLimits())
    good = good_client(clients, door)
    sock = raw_socket(clients, door.port)
    body = codec.dumps([{"jsonrpc": "2.0", "method": "Task.stop", "params": {"taskID": task_id}, "id": "s"}])
    sock.sendall(
        b"CONNECT\naccept-version:1.2\n\n\x00"
        b"SUBSCRIBE\nid:1\ndestination:r\n\n\x00"
        + f"SEND\ndestination:jms.topic.vdsm_requests\nreply-to:r\ncontent-length:{len(body)}\n\n".encode()
        + body
        + b"\x00"
        + b"SEND\nno colon here\n\n\x00"
    )
    parser = FrameParser()
    frames: list[Frame] = []
    while len(frames) < 2:
        data = sock.recv(65536)
        assert data, f"closed after {frames}"
        frames += parser.feed(data)
    assert [f.command for f in frames[:2]] == ["CONNECTED", "ERROR"]
    assert frames[1].headers["message"] == "bad header line 'no colon here'"
    assert closed_within(sock, MARGIN_S)
    wait_until(lambda: stopped == [task_id], timeout_s=10, what="the stop ran")
    answers(good)
