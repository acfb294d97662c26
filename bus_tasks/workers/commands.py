"""What each ``bus-tasks`` command does, once its arguments are parsed (``workers/cli.py``)."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from bus_tasks.client import TasksClient
from bus_tasks.config import Settings
from bus_tasks.core.model import describe_validation
from bus_tasks.errors import ConfigError, DeadlineExceeded, NoAggregator
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.workers import EXIT_INTERRUPTED, render, watch_view, wiring
from bus_tasks.workers.demo import run_demo
from bus_tasks.workers.simulate import simulate
from bus_tasks.workers.stomp import StompOptions, run_stomp

Command = Callable[[argparse.Namespace, Settings], int]

log = logging.getLogger("bus_tasks.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2

# A one-shot command gives up on an unreachable broker instead of retrying forever.
CLIENT_CONNECT_RETRIES = 3


def terminal_width() -> int | None:
    """The width tables are fitted to: the terminal's (``$COLUMNS`` first); None for a pipe or a
    file, which get whole cells, for grep and awk."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def print_json(value: Any) -> None:
    """``value`` as JSON on stdout: indented on a terminal, compact (one line) for a program."""
    print(render.to_json(value, pretty=sys.stdout.isatty()))


def _client(args: argparse.Namespace, settings: Settings) -> TasksClient:
    timeout = args.timeout if args.timeout is not None else settings.rpc_timeout_s
    connection = wiring.connect(settings, connect_retries=CLIENT_CONNECT_RETRIES)
    return TasksClient(connection, timeout_s=timeout, trust=settings.trust)


def cmd_stomp(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_ca and not args.tls_cert):
        print(
            "bus-tasks stomp: --tls-cert and --tls-key go together (and --tls-ca needs them)", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        settings = settings.with_overrides(
            stomp_connect_timeout_s=args.connect_timeout,
            stomp_max_connections=args.max_connections,
            stomp_max_pending=args.max_pending,
            stomp_max_outbuf_bytes=args.max_outbuf_bytes,
            stomp_metrics=args.metrics,
        )
    except ValidationError as exc:
        raise ConfigError(describe_validation(exc)) from None
    host, port = args.listen
    timeout = args.timeout if args.timeout is not None else settings.rpc_timeout_s
    options = StompOptions(host, port, timeout, args.tls_cert, args.tls_key, args.tls_ca)
    return run_stomp(settings, options)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return run_demo(sys.stdout, storage_tasks=args.storage_tasks)


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    width = terminal_width()
    with _client(args, settings) as client:
        if args.legacy == "info":
            info = client.get_all_tasks_info()
            if args.json:
                print_json(info)
            else:
                print(render.info_table(info, width=width))
        elif args.legacy == "statuses":
            statuses = client.get_all_tasks_statuses()
            if args.json:
                print_json(statuses)
            else:
                print(render.statuses_table(statuses, width=width))
        elif args.watch:
            try:
                _follow(client, args)
            except KeyboardInterrupt:
                return EXIT_INTERRUPTED  # the README's status for Ctrl-C, the way a watch ends
        else:
            options = {"match": args.match} if args.match != "any" else None
            tasks = client.get_all_tasks(args.tag, options)
            if args.json:
                print_json(tasks)
            else:
                print(render.tasks_table(tasks, width=width))
    return 0


def _follow(client: TasksClient, args: argparse.Namespace) -> None:
    """``tasks --watch`` until Ctrl-C. When the aggregator it follows goes and none answers (a
    restart), it waits for one and lists again rather than end; with none at the start, it ends."""
    followed = False
    while True:
        watch = client.watch(args.tag, match=args.match)
        try:
            if sys.stdout.isatty() and not args.json:
                title = f"tasks tagged {' '.join(args.tag)} ({args.match})" if args.tag else "all tasks"
                watch_view.follow_screen(watch, sys.stdout, title=title)
            else:
                watch_view.follow_lines(watch, sys.stdout, as_json=args.json)
            return
        except (NoAggregator, DeadlineExceeded) as exc:
            followed = followed or watch.state.following is not None
            if not followed:
                raise
            log.warning("%s; waiting for an aggregator, to list again (Ctrl-C to stop)", exc.message)
            client.wait_for_aggregator = True  # each listing now waits its whole deadline for one
        finally:
            watch.close()


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        status = client.get_task_status(args.task_id)
    if args.json:
        print_json(status)
    else:
        print(render.statuses_table({status["taskID"]: status}, width=terminal_width()))
    return 0


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        details = client.get_task_details(args.task_id)
    if args.json:
        print_json(details)
    else:
        print(render.record(_one_of_each(details)))
    return 0


def _one_of_each(details: dict[str, Any]) -> dict[str, Any]:
    """TaskDetails for a person: VDSM's copies (``taskID``, ``tag``) left out, the engine's
    state beside the internal one (``--json`` keeps every field)."""
    engine = "/".join(part for part in (details["taskState"], details["taskResult"]) if part)
    shown = {k: v for k, v in details.items() if k not in ("taskID", "tag", "taskState", "taskResult")}
    shown["state"] = f"{details['state']} (engine: {engine})"
    return shown


def cmd_call(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        result = client.call(args.method, dict(args.params))
    print_json(result)
    return 0


def control(method: Callable[[TasksClient, str], bool]) -> Command:
    """The command of a control call: stop, revert or clear one task."""

    def command(args: argparse.Namespace, settings: Settings) -> int:
        with _client(args, settings) as client:
            result = method(client, args.task_id)
        if args.json:
            print_json(result)
        else:
            print(f"{args.command} {args.task_id}: ok")
        return 0

    return command


def cmd_inject(args: argparse.Namespace, settings: Settings) -> int:
    with wiring.connect(settings, confirm_publish=True, connect_retries=CLIENT_CONNECT_RETRIES) as connection:
        publisher = TaskPublisher(connection, args.subsystem)
        ids = [publisher.create(args.verb, args.tag, state=args.state).id for _ in range(args.count)]
        # Publishing is pipelined: the ids are printed once the broker has every task.
        publisher.flush(settings.rpc_timeout_s)
    for task_id in ids:
        print(task_id)
    return 0


def cmd_retag(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        tags = client.retag_task(args.task_id, args.tag)
    if args.json:
        print_json(tags)
    else:
        print(f"{args.task_id}: tags {','.join(tags)}")  # as the TAGS column shows them
    return 0


def cmd_clear(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        result = client.clear_task(args.task_id, force=args.force)
    if args.json:
        print_json(result)
    else:
        print(f"clear {args.task_id}: ok{' (forced)' if args.force else ''}")
    return 0


def listing(fetch: Callable[[TasksClient], Any], table: Callable[..., str]) -> Command:
    """The command that prints one listing of the aggregator: as JSON, or as ``table``."""

    def command(args: argparse.Namespace, settings: Settings) -> int:
        with _client(args, settings) as client:
            listed = fetch(client)
        if args.json:
            print_json(listed)
        else:
            print(table(listed, width=terminal_width()))
        return 0

    return command


cmd_aggregators = listing(TasksClient.aggregators, render.aggregators_table)
cmd_subsystems = listing(TasksClient.subsystems, render.subsystems_table)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    return simulate(
        settings,
        kind=args.kind,
        subsystem=args.subsystem,
        tasks=args.tasks,
        interval_s=args.interval,
        keep_rounds=args.keep_rounds,
    )
