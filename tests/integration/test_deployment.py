"""One aggregator per broker: a second one on the same events queue says so when it starts."""

from __future__ import annotations

import logging

import pytest
from support.brokers import Broker, SystemFactory

from bus_tasks import names

pytestmark = pytest.mark.integration


def warnings_about_another_aggregator(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("bus_tasks.aggregator")
        and r.levelno == logging.WARNING
        and "another aggregator" in r.getMessage()
    ]


def test_a_second_aggregator_on_one_broker_warns_that_the_events_would_be_split(
    rabbitmq_broker: Broker, start_system: SystemFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bus_tasks.aggregator")
    start_system(rabbitmq_broker)
    assert warnings_about_another_aggregator(caplog) == []

    start_system(rabbitmq_broker)

    [warning] = warnings_about_another_aggregator(caplog)
    assert warning.startswith(f"another aggregator (1 consumer(s)) already reads {names.EVENTS_QUEUE} on ")
    assert warning.endswith(": run one per broker, or both views will miss events")
    assert "guest:guest" not in warning
