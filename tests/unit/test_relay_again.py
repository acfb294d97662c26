"""The control relay after its connection was recovered (SPEC 17, issue 25): the commands still
unanswered go again under the same correlation id, for their answers may have gone with the old
node's reply queue; only those the broker confirmed (a refused one would be refused again, and
again, at each recovery: seen in CI) and carrying a call key, which the owner answers once."""

from __future__ import annotations

import time
from collections import Counter

import orjson
from support.brokers import Broker

from bus_tasks.aggregator.methods import Forward
from bus_tasks.aggregator.relay import ControlRelay
from bus_tasks.protocol import jsonrpc
from bus_tasks.protocol.context import LOCAL
from bus_tasks.transport import Delivery

TASK = "6c1f3a52-7d7e-4f0e-9a53-2f1d2c3b4a50"


def test_unanswered_confirmed_commands_with_a_call_key_go_again_once_after_a_recovery(
    memory_broker: Broker,
) -> None:
    bus = memory_broker.connection(confirm_publish=False)
    relay = ControlRelay(bus, Counter())
    relay.start()
    queue = bus.topology.declare_control_queue("vdsm")
    commands: list[Delivery] = []
    bus.consume(queue, commands.append, no_ack=True)
    answered: list[bytes] = []

    def forward(request: str | None, expiration_ms: int) -> None:
        relay.forward(
            Forward("stop", TASK, "vdsm", request=request),
            "r1",
            "Task.stop",
            context=LOCAL,
            deliver=answered.append,
            expiration_ms=expiration_ms,
            received=time.time(),
            received_mono=time.monotonic(),
        )

    forward("alice/c1/'r1'", 10_000)
    forward(None, 10_000)  # no call key: the owner could not tell a repeat, so it goes once
    forward("alice/c2/'r1'", 300)  # due its code 100 before the recovery
    bus.drain(0.5)
    assert len(commands) == 3
    assert relay.send_again() == 0  # no recovery yet
    time.sleep(0.4)
    assert relay.time_out() == 1
    assert orjson.loads(answered.pop())["error"]["code"] == 100
    # Not confirmed yet when the connection goes (its confirm is read by the next drain): the
    # connection's outbox sends it again, or drops it if the broker refused it: not the relay.
    forward("alice/c3/'r1'", 10_000)
    relay.recovered()
    assert relay.send_again() == 1
    assert relay.send_again() == 0  # once per recovery
    bus.drain(0.5)
    assert len(commands) == 5
    again = commands[4]
    assert (again.body, again.correlation_id) == (commands[0].body, commands[0].correlation_id)
    assert orjson.loads(again.body)["params"]["request"] == "alice/c1/'r1'"
    assert again.reply_to == relay.replies
    assert relay.counts["control_sent_again"] == 1
    # The owner answers both; the caller hears the first, the second is late.
    for _ in range(2):
        bus.publish(
            jsonrpc.result_body(again.correlation_id, True),
            routing_key=relay.replies,
            correlation_id=again.correlation_id,
            persistent=False,
        )
    bus.drain(0.5)
    bus.drain(0.1)
    assert [orjson.loads(a)["result"] for a in answered] == [True]
    assert relay.counts["control_late_replies"] == 1
    bus.close()
