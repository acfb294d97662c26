"""Figure ``authz``: a ``Task.getStatus`` round trip with authorization on against off (SPEC 16).

One aggregator on a RabbitMQ vhost of its own, one task, one ``TasksClient`` calling
``Task.getStatus`` back to back. Blocks alternate between the two sides, on the same aggregator,
connections and queues: "on" asks :func:`~bus_tasks.authorization.authorize` of every call (the
caller a reader: its login user, which every request carries as ``user_id``) and reads the front
door headers as ``serve`` does with authorization on; "off" admits every call, as ``serve`` does
by default. The figure is the seconds per call, on over off: what deciding costs a call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack

from pydantic import BaseModel

from bench.harness import (
    Figure,
    Sizes,
    at_most,
    check,
    fmt_time,
    median,
    rabbitmq_vhost,
    say,
    side_by_side,
    wait_for,
)
from bus_tasks import transport
from bus_tasks.aggregator import Aggregator
from bus_tasks.aggregator.authorization import Authorization, caller_of
from bus_tasks.aggregator.policy import CallPolicy
from bus_tasks.authorization import Roles
from bus_tasks.client import TasksClient
from bus_tasks.core.model import State
from bus_tasks.errors import PermissionDenied
from bus_tasks.protocol.context import CallContext
from bus_tasks.protocol.methods import MethodName
from bus_tasks.protocol.params import TaskParams
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.testing import RunningAggregator
from bus_tasks.transport import BusOptions

# Many short blocks: deciding costs a few microseconds of a ~1-2 ms round trip, well inside the
# scheduling noise of one block on a shared machine; short blocks, alternated, share each burst
# of load, and the median of many per-block ratios resolves the per-cent the target is about.
CALLS = Sizes(full=100, quick=50)  # per block
REPS = Sizes(full=151, quick=3)
DECIDE_CALLS = Sizes(full=100_000, quick=1_000)
CALL_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0
# The caller's identity on the broker (the vhost's user), a reader among a few others.
ROLES = Roles.of(readers=["guest", *(f"reader{i}" for i in range(20))], operators=["ops"], admins=["root"])


class Switch(CallPolicy):
    """Authorization while ``on``, else nothing: one aggregator serves both sides of the figure."""

    def __init__(self, inner: CallPolicy) -> None:
        self.inner = inner
        self.on = False

    def admit(self, context: CallContext, method: MethodName, params: BaseModel) -> None:
        if self.on:
            self.inner.admit(context, method, params)

    def served(
        self,
        context: CallContext,
        method: str,
        outcome: str,
        seconds: float,
        *,
        params: BaseModel | None = None,
    ) -> None:
        if self.on:
            self.inner.served(context, method, outcome, seconds, params=params)


def _denied(call: Callable[[], object]) -> bool:
    try:
        call()
    except PermissionDenied:
        return True
    return False


def decide_us(switch: Switch, calls: int) -> tuple[float, float]:
    """Microseconds a call spends in the policy and in reading its caller, on and off, in process
    (what the figure's round trips differ by, without the round trip)."""
    context = CallContext("guest", "amqp", None, "bench", False)
    params = TaskParams(taskID=str(uuid.uuid4()))
    per_call: list[float] = []
    for on in (True, False):
        switch.on = on
        front_doors = frozenset[str]() if on else None
        began = time.perf_counter()
        for _ in range(calls):
            caller_of("guest", {}, front_doors=front_doors, deadline=None, correlation_id="bench")
            switch.admit(context, MethodName.GET_STATUS, params)
            switch.served(context, MethodName.GET_STATUS, "ok", 0.001, params=params)
        per_call.append((time.perf_counter() - began) / calls * 1e6)
    return per_call[0], per_call[1]


def run(quick: bool) -> list[Figure]:
    calls, reps = CALLS.pick(quick), REPS.pick(quick)
    switch = Switch(Authorization(ROLES))
    with rabbitmq_vhost("authz") as url, ExitStack() as stack:
        aggregator = Aggregator(transport.open(url, BusOptions(confirm_publish=True)), call_policy=switch)
        stack.enter_context(RunningAggregator(aggregator))
        publisher = TaskPublisher(
            stack.enter_context(transport.open(url, BusOptions(confirm_publish=True))), "bench"
        )
        task_id = publisher.create("copyImage", ["spm"], state=State.RUNNING).id
        publisher.flush(READY_TIMEOUT_S)
        wait_for(
            lambda: task_id in aggregator.view, timeout_s=READY_TIMEOUT_S, what=f"task {task_id} in the view"
        )
        client = stack.enter_context(TasksClient(transport.open(url), timeout_s=CALL_TIMEOUT_S))

        def block(on: bool) -> float:
            # Switched between blocks, with no call in flight: the loop sees one side at a time.
            switch.on = on
            aggregator.requests.front_doors = frozenset() if on else None
            began = time.perf_counter()
            for _ in range(calls):
                client.get_task_status(task_id)
            return (time.perf_counter() - began) / calls

        block(True)
        check(_denied(lambda: client.stop_task(task_id)), "a reader's Task.stop denied while on")
        seconds = side_by_side(lambda: block(True), lambda: block(False), reps)
    on, off = median(seconds.ours), median(seconds.baseline)
    decide_on, decide_off = decide_us(switch, DECIDE_CALLS.pick(quick))
    deciding = f"in process, deciding and reading the caller {decide_on:.2f} us on, {decide_off:.2f} us off"
    say(f"  authz getStatus: on {fmt_time(on)}, off {fmt_time(off)} per call; {seconds.spread()}; {deciding}")
    return [
        Figure(
            "authz getStatus",
            f"{fmt_time(on)}/call",
            f"{fmt_time(off)}/call",
            seconds.ratio,
            at_most(1.05),
            f"{calls:,} calls x {reps} reps",
            note=(
                "Task.getStatus round trip over RabbitMQ, authorization on (a reader's call, decided"
                f" by authorize) against off, on one aggregator, blocks alternating; {seconds.spread()};"
                f" {deciding}"
            ),
        )
    ]
