"""The broker link: back-off that grows, a log budget per outage, refusals told at once."""

from __future__ import annotations

import itertools
import logging
import time

import pytest
from amqp.exceptions import AccessRefused, NotAllowed, NotFound
from support.ports import free_port
from support.timing import Stopwatch, assert_ended_at, assert_ended_by

from bus_tasks import transport
from bus_tasks.config import redact_url
from bus_tasks.errors import PublishUnreachable
from bus_tasks.transport import BusOptions
from bus_tasks.transport.backoff import Backoff
from bus_tasks.transport.kombu.schemes import refusal


def closed_port_url() -> str:
    return f"amqp://guest:s3cret@127.0.0.1:{free_port()}//"


def transport_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bus_tasks.transport"]


# -- the back-off (pure) ---------------------------------------------------------------------


def test_the_wait_between_attempts_starts_at_a_tenth_of_a_second_and_doubles_up_to_the_cap() -> None:
    backoff = Backoff(max_s=5.0)
    waits = []
    for attempt in range(10):
        backoff.failed(float(attempt))
        waits.append(round(backoff.wait_s(float(attempt)), 3))
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]


def test_an_attempt_is_due_only_once_its_wait_has_passed() -> None:
    backoff = Backoff(max_s=5.0)
    assert backoff.wait_s(100.0) == 0.0  # nothing failed yet
    backoff.failed(100.0)
    backoff.failed(100.1)
    assert backoff.wait_s(100.2) == pytest.approx(0.1)
    assert backoff.wait_s(100.3) == 0.0


def test_an_outage_logs_its_first_failure_then_at_each_doubling_of_attempts_or_every_30s() -> None:
    backoff = Backoff(max_s=5.0)
    now, logged, at = 0.0, [], []
    while now < 3600.0:  # an hour of a broker away, attempts as the back-off lets them come
        if backoff.failed(now):
            logged.append(backoff.failures)
            at.append(now)
        now += backoff.wait_s(now)
    assert logged[:4] == [1, 2, 4, 8]
    assert backoff.failures > 700  # one attempt per 5 s
    assert len(logged) <= 3600 / 30 + 12  # not one line per attempt
    gaps = [later - earlier for earlier, later in itertools.pairwise(at)]
    assert max(gaps) <= 30.0 + 5.0  # and never silent for long: the outage stays visible


def test_success_ends_the_outage_and_the_next_failure_starts_over() -> None:
    backoff = Backoff(max_s=5.0)
    for attempt in range(6):
        backoff.failed(float(attempt))
    assert backoff.succeeded() == 6
    assert backoff.succeeded() == 0
    assert backoff.failed(10.0) is True  # logged again: a new outage
    assert (backoff.failures, round(backoff.wait_s(10.0), 3)) == (1, 0.1)


def test_retries_are_spent_after_one_more_failure_than_they_allow_and_none_never() -> None:
    backoff = Backoff()
    for attempt in range(3):
        backoff.failed(float(attempt))
    assert (backoff.exhausted(3), backoff.exhausted(2), backoff.exhausted(None)) == (False, True, False)


# -- refusals ----------------------------------------------------------------------------------


def test_a_refused_login_or_vhost_is_a_refusal_and_other_broker_errors_are_not() -> None:
    login = AccessRefused("Login was refused using authentication mechanism PLAIN", (0, 0))
    vhost = NotAllowed("vhost nope not found", (10, 40))
    assert refusal(login) == "403 Login was refused using authentication mechanism PLAIN"
    assert refusal(vhost) == "530 vhost nope not found"
    assert refusal(NotFound("no queue 'x'", (50, 10))) is None
    assert refusal(ConnectionRefusedError(111, "Connection refused")) is None


# -- a link to a closed port -----------------------------------------------------------------


def test_connecting_to_a_closed_port_backs_off_and_gives_up_after_its_retries_with_few_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bus_tasks.transport")
    connection = transport.open(closed_port_url(), BusOptions(connect_retries=4))
    with Stopwatch() as watch, pytest.raises(ConnectionRefusedError):
        connection.connect()
    # Five attempts, 0.1 + 0.2 + 0.4 + 0.8 s apart: 1.5 s, not five attempts at once.
    assert_ended_by(watch, 1.5, not_before_s=1.5)
    lines = transport_lines(caplog)
    assert len(lines) == 4, lines  # failures 1, 2 and 4, then the one that gives up
    assert "unreachable: [Errno 111] Connection refused" in lines[0]
    assert lines[-1].endswith("giving up")
    assert all("s3cret" not in line for line in lines)
    connection.close()


def test_a_flush_while_the_broker_is_unreachable_names_the_broker_not_unconfirmed_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bus_tasks.transport")
    url = closed_port_url()
    connection = transport.open(url, BusOptions(confirm_publish=True))  # retries until the flush's deadline
    connection.publish(b"{}", exchange="bus_tasks.events", routing_key="task.vdsm.created")
    with Stopwatch() as watch, pytest.raises(PublishUnreachable) as caught:
        connection.flush(3.0)
    assert_ended_at(watch, 3.0)
    assert caught.value.message == (
        f"General Exception: broker {url.replace('s3cret', '***')} unreachable:"
        " [Errno 111] Connection refused (1 message not sent)"
    )
    # About 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of attempts: 6 at most, and 3 log lines, not 30.
    assert len(transport_lines(caplog)) <= 4, transport_lines(caplog)
    caplog.clear()
    connection.close(flush_timeout_s=0.5)
    assert len(transport_lines(caplog)) <= 2, transport_lines(caplog)


def test_a_publisher_out_of_retries_keeps_its_messages_and_its_flush_fails_at_once() -> None:
    connection = transport.open(closed_port_url(), BusOptions(confirm_publish=True, connect_retries=2))
    connection.publish(b"{}", exchange="bus_tasks.events", routing_key="task.vdsm.created")
    assert connection.pending == 1  # kept for when the broker is back
    started = time.monotonic()
    with pytest.raises(PublishUnreachable, match=r"unreachable: \[Errno 111\] Connection refused"):
        connection.flush(30.0)
    assert time.monotonic() - started < 2.0  # not the 30 s of the flush: the retries are spent
    connection.close(flush_timeout_s=0.5)


# -- a cluster: several nodes in one URL -------------------------------------------------------


def cluster_of_closed_ports(count: int) -> list[str]:
    return [f"amqp://guest:pw-node{n}@127.0.0.1:{free_port()}//" for n in range(count)]


def test_each_failed_attempt_moves_to_the_next_node_round_robin_and_no_password_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bus_tasks.transport")
    nodes = cluster_of_closed_ports(3)
    connection = transport.open(";".join(nodes), BusOptions(connect_retries=5))
    with pytest.raises(ConnectionRefusedError):
        connection.connect()  # six attempts
    lines = [r.getMessage() for r in caplog.records if r.name == "bus_tasks.transport"]
    moves = [line for line in lines if line.startswith("broker link moves")]
    shown = [redact_url(node) for node in nodes]
    hops = [(shown[n % 3], shown[(n + 1) % 3]) for n in range(6)]  # each node twice, in turn
    assert moves == [f"broker link moves from {a} to {b}" for a, b in hops]
    assert all("pw-node" not in line for line in lines), lines
    assert "pw-node" not in repr(connection)
    connection.close()


@pytest.mark.integration
def test_a_link_whose_first_node_is_down_connects_to_the_next(rabbitmq_vhost: str) -> None:
    live = f"amqp://guest:guest@127.0.0.1:5672/{rabbitmq_vhost}"
    connection = transport.open(f"{closed_port_url()};{live}", BusOptions(connect_retries=3))
    with Stopwatch() as watch:
        connection.connect()
    assert_ended_by(watch, 1.0)  # one refused attempt, 0.1 s of back-off, then the live node
    assert connection.link.node_url == live  # type: ignore[attr-defined]  # the kombu bus's link
    connection.close()
