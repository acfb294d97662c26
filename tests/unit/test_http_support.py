"""Shared helpers of the HTTP front door's unit tests (no tests here): a front door whose RPC calls
are answered by the aggregator's real method table over a view, served on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from bus_tasks.aggregator.methods import Dispatcher, Forward
from bus_tasks.core.view import TaskView
from bus_tasks.frontdoors.http.mirror import Mirror
from bus_tasks.frontdoors.http.rpc import RpcCaller
from bus_tasks.frontdoors.http.server import HttpFrontDoor, HttpOptions
from bus_tasks.protocol import jsonrpc, shapes
from bus_tasks.protocol.context import CallContext


@dataclass
class DispatcherBridge:
    """Answers each request as the aggregator's loop would, with its ``Dispatcher`` over ``view``;
    a command to forward is recorded and answered ``true`` (or never, ``answer_forwards=False``)."""

    dispatcher: Dispatcher
    caller: RpcCaller
    answer_forwards: bool = True
    answer: bool = True  # False: no reply ever comes
    recovering: bool = False
    forwarded: list[Forward] = field(default_factory=list)

    def submit(
        self, body: bytes, correlation_id: str, deadline: float, *, on_behalf_of: str | None = None
    ) -> None:
        if not self.answer:
            return
        reply = self.dispatcher.handle(body, CallContext(identity=on_behalf_of, door="http"))
        if reply.forward is not None:
            self.forwarded.append(reply.forward)
            if not self.answer_forwards:
                return
            reply_body = jsonrpc.result_body(reply.request_id, True)
        else:
            assert reply.body is not None
            reply_body = reply.body
        asyncio.get_running_loop().call_soon(self.caller.on_reply, correlation_id, reply_body)


@dataclass
class Facts:
    """The aggregator's health facts, as a test sets them."""

    problem_now: str | None = None
    ready_now: bool = True

    def problem(self) -> str | None:
        return self.problem_now

    def ready(self) -> bool:
        return self.ready_now


@dataclass
class Door:
    """A front door under test and its parts."""

    door: HttpFrontDoor
    view: TaskView
    bridge: DispatcherBridge
    facts: Facts
    mirror: Mirror


def make_door(
    *,
    timeout_s: float = 5.0,
    options: HttpOptions | None = None,
    registry: CollectorRegistry | None = None,
    connected: bool = True,
    web_dir: Path | None = None,
    mirror: Mirror | None = None,
) -> Door:
    view = TaskView(shapes.task_details_member)
    caller = RpcCaller(timeout_s=timeout_s, broker="amqp://guest:***@127.0.0.1:5672/test")
    bridge = DispatcherBridge(Dispatcher(view), caller)
    if connected:
        caller.attach(bridge)
    facts = Facts()
    options = options or HttpOptions()
    if web_dir is not None:
        options = HttpOptions(options.control_token, web_dir, options.sse, options.listing_timeout_s)
    mirror = mirror if mirror is not None else Mirror()
    door = HttpFrontDoor(caller, mirror, health=facts, registry=registry, options=options)
    return Door(door, view, bridge, facts, mirror)


@contextlib.asynccontextmanager
async def serving(door: HttpFrontDoor) -> AsyncIterator[ClientSession]:
    """The front door on a loopback port, and a session whose relative URLs go to it."""
    server = TestServer(door.application(), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession(base_url=str(server.make_url("/"))) as session:
            yield session
    finally:
        await server.close()
