"""Every call over the bus reaches the method table with its context, and the aggregator's call
policy sees each one (each member of a batch, forwarded calls once answered)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from kombu.connection import Connection
from pydantic import BaseModel
from support.brokers import Broker, System
from support.raw_rpc import RawCaller

from bus_tasks import names
from bus_tasks.aggregator import Aggregator
from bus_tasks.aggregator.policy import CallPolicy
from bus_tasks.errors import GeneralError
from bus_tasks.protocol.context import CallContext
from bus_tasks.protocol.methods import MethodName
from bus_tasks.testing import RunningAggregator, wait_until

TIMEOUT_S = 10.0


class Recording(CallPolicy):
    """Remembers every call admitted and told (from the aggregator's thread); refuses Task.clear."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.admitted: list[tuple[CallContext, MethodName]] = []
        self.told: list[tuple[CallContext, str, str]] = []

    def admit(self, context: CallContext, method: MethodName, params: BaseModel) -> None:
        with self.lock:
            self.admitted.append((context, method))
        if method is MethodName.CLEAR:
            raise GeneralError(message="General Exception: no clearing here")

    def served(
        self,
        context: CallContext,
        method: str,
        outcome: str,
        seconds: float,
        *,
        params: BaseModel | None = None,
    ) -> None:
        with self.lock:
            self.told.append((context, method, outcome))


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def broker_of_the_lane(request: pytest.FixtureRequest) -> Broker:
    return request.getfixturevalue(f"{request.param}_broker")  # type: ignore[no-any-return]


@pytest.fixture
def recorded(broker_of_the_lane: Broker) -> Iterator[tuple[System, Recording]]:
    """A running aggregator whose call policy records."""
    policy = Recording()
    aggregator = Aggregator(broker_of_the_lane.connection(), call_policy=policy)
    with RunningAggregator(aggregator):
        system = System(broker_of_the_lane, aggregator)
        try:
            yield system, policy
        finally:
            system.stop_threads()


def test_a_call_over_the_bus_comes_with_the_amqp_door_and_the_callers_deadline(
    recorded: tuple[System, Recording],
) -> None:
    system, policy = recorded
    client = system.client(timeout_s=TIMEOUT_S)
    before = time.time()

    client.get_all_tasks()

    after = time.time()
    [(context, method)] = policy.admitted
    assert method is MethodName.GET_ALL_TASKS
    # Every publish carries its login's user_id (SPEC 15): RabbitMQ's, validated; none elsewhere.
    caller = "guest" if system.broker.transport == "rabbitmq" else None
    assert (context.door, context.identity) == ("amqp", caller)
    assert context.deadline is not None
    assert before + TIMEOUT_S - 1.0 <= context.deadline <= after + TIMEOUT_S
    assert policy.told == [(context, "Host.getAllTasks", "ok")]


def test_each_member_of_a_batch_is_admitted_with_the_batchs_context_and_may_be_refused_alone(
    recorded: tuple[System, Recording],
) -> None:
    system, policy = recorded
    pub = system.publisher("vdsm")
    task = pub.create("copyImage", tags=["spm"])
    pub.finish(task.id)
    client = system.client(timeout_s=TIMEOUT_S)
    wait_until(lambda: task.id in client.get_all_tasks(), timeout_s=TIMEOUT_S, what="the task listed")
    policy.admitted.clear()

    outcomes = client.batch([("Task.clear", {"taskID": task.id}), ("Task.getStatus", {"taskID": task.id})])

    assert [o.error.code if o.error else None for o in outcomes] == [100, None]
    assert [method for _, method in policy.admitted] == [MethodName.CLEAR, MethodName.GET_STATUS]
    assert len({context for context, _ in policy.admitted}) == 1
    assert task.id in client.get_all_tasks()


def test_a_forwarded_call_is_told_with_its_context_once_its_subsystem_answers(
    recorded: tuple[System, Recording],
) -> None:
    system, policy = recorded
    pub = system.publisher("vdsm")
    stopped: list[str] = []
    pub.on_stop(stopped.append)
    system.listen(pub)
    task = pub.create("copyImage", tags=["spm"])
    client = system.client(timeout_s=TIMEOUT_S)
    wait_until(lambda: task.id in client.get_all_tasks(), timeout_s=TIMEOUT_S, what="the task listed")

    assert client.stop_task(task.id) is True
    assert stopped == [task.id]

    stop_contexts = [context for context, method in policy.admitted if method is MethodName.STOP]
    assert len(stop_contexts) == 1
    wait_until(
        lambda: (stop_contexts[0], "Task.stop", "ok") in policy.told,
        timeout_s=TIMEOUT_S,
        what="the forwarded stop told",
    )


@pytest.mark.integration
def test_on_rabbitmq_the_identity_is_the_user_id_the_broker_validated(rabbitmq_broker: Broker) -> None:
    policy = Recording()
    aggregator = Aggregator(rabbitmq_broker.connection(), call_policy=policy)
    with RunningAggregator(aggregator), Connection(rabbitmq_broker.url) as raw:  # type: ignore[no-untyped-call]
        caller = RawCaller(rabbitmq_broker.connection(confirm_publish=False))
        correlation_id = uuid.uuid4().hex
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "Host.getAllTasks", "params": {}})
        raw.Producer().publish(
            body,
            routing_key=names.RPC_QUEUE,
            reply_to=caller.queue,
            correlation_id=correlation_id,
            user_id="guest",  # RabbitMQ refuses any other: the connection logged in as guest
            content_type="application/json",
        )
        [reply] = caller.wait([correlation_id])

    assert reply["result"] == {}
    assert [(context.identity, context.door) for context, _ in policy.admitted] == [("guest", "amqp")]
