"""No raw kombu error leaves the library: the publisher and serve raise bus_tasks' own errors."""

from __future__ import annotations

import threading

import pytest
from support.ports import free_port

from bus_tasks import transport
from bus_tasks.aggregator import Aggregator
from bus_tasks.errors import BrokerUnavailable
from bus_tasks.subsystem import TaskPublisher
from bus_tasks.transport import BusOptions


def test_a_publisher_whose_broker_is_unreachable_raises_broker_unavailable_naming_it() -> None:
    url = f"amqp://guest:secret@127.0.0.1:{free_port()}//"
    publisher = TaskPublisher(
        transport.open(url, BusOptions(connect_retries=1, connect_timeout_s=1.0)), "vdsm"
    )
    with pytest.raises(BrokerUnavailable, match=r"broker amqp://guest:\*\*\*@127\.0\.0\.1") as caught:
        publisher.create("copyImage", ["spm"])
    assert "secret" not in str(caught.value)
    assert publisher.tasks == {}  # nothing is recorded that was not published


def test_an_aggregator_whose_broker_is_unreachable_raises_broker_unavailable() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    aggregator = Aggregator(transport.open(url, BusOptions(connect_retries=1, connect_timeout_s=1.0)))
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        aggregator.run(threading.Event())
