"""``bus-tasks``: serve, demo, list, inspect, control and inject tasks."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from bus_tasks import codec, render
from bus_tasks.bus import BusConnection
from bus_tasks.client import TasksClient
from bus_tasks.config import Settings
from bus_tasks.errors import BusTasksError
from bus_tasks.legacy import record_from_details
from bus_tasks.model import State
from bus_tasks.publisher import TaskPublisher
from workers.aggregator import serve
from workers.demo import run_demo
from workers.simulator import simulate

log = logging.getLogger("bus_tasks.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2


def _broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="broker URL: amqp://user:pass@host:5672/vhost, redis://host:6379/0 or memory:// "
        "(default: $BUS_TASKS_BROKER_URL, else broker_url in config/bus_tasks.toml)",
    )


def _client_options(parser: argparse.ArgumentParser) -> None:
    _broker_options(parser)
    parser.add_argument("--timeout", type=float, metavar="S", help="deadline of the call in seconds")
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bus-tasks",
        description="Task-status service for message-bus driven systems: one merged view of every "
        "task, queried with getAllTasks, VDSM-compatible.",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ... (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the aggregator: consume events, answer getAllTasks")
    _broker_options(serve)
    serve.add_argument("--data-dir", metavar="DIR", help="where the view is kept (default: data/)")

    demo = sub.add_parser("demo", help="run the whole system in one process on memory:// and print it")
    demo.add_argument("--storage-tasks", type=int, default=8, metavar="N", help="simulated storage tasks")

    tasks = sub.add_parser("tasks", help="list tasks of a running aggregator (getAllTasks)")
    _client_options(tasks)
    tasks.add_argument("--tag", action="append", metavar="TAG", help="only tasks with this tag (repeatable)")
    tasks.add_argument(
        "--match",
        choices=("any", "all"),
        default="any",
        help="with several --tag: any or all of them",
    )
    tasks.add_argument(
        "--legacy",
        choices=("info", "statuses"),
        help="VDSM's getAllTasksInfo or getAllTasksStatuses instead",
    )

    for name, what in (
        ("status", "show one task's status (Task.getStatus)"),
        ("stop", "stop a task (Task.stop)"),
        ("revert", "revert a done task (Task.revert)"),
        ("clear", "clear a done task (Task.clear)"),
    ):
        cmd = sub.add_parser(name, help=what)
        _client_options(cmd)
        cmd.add_argument("task_id", metavar="TASK_ID")

    inject = sub.add_parser("inject", help="publish test tasks with chosen tags, as a subsystem")
    _broker_options(inject)
    inject.add_argument("--subsystem", default="test", help="owning subsystem (default: test)")
    inject.add_argument("--verb", default="testTask", help="verb (default: testTask)")
    inject.add_argument("--tag", action="append", default=[], metavar="TAG", help="tag (repeatable)")
    inject.add_argument("--state", default="running", choices=[s.value for s in State], help="state")
    inject.add_argument("--count", type=int, default=1, metavar="N", help="how many tasks")

    retag = sub.add_parser("retag", help="replace the tags of a task (republished as its subsystem)")
    _client_options(retag)
    retag.add_argument("task_id", metavar="TASK_ID")
    retag.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="new tag (repeatable; none clears)",
    )

    simulate = sub.add_parser(
        "simulate", help="run a simulated subsystem (storage or gluster) against a broker"
    )
    _broker_options(simulate)
    simulate.add_argument("kind", choices=("storage", "gluster"))
    simulate.add_argument("--subsystem", help="subsystem name (default: vdsm or gluster)")
    simulate.add_argument("--tasks", type=int, default=6, metavar="N", help="tasks per round")
    simulate.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between steps")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings().with_overrides(
            broker_url=getattr(args, "broker", None), log_level=args.log_level
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"bus-tasks: bad configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The demo prints tables on stdout; its log stays quiet unless asked for.
    level = args.log_level or ("WARNING" if args.command == "demo" else settings.log_level)
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    command: Callable[[argparse.Namespace, Settings], int] = COMMANDS[args.command]
    try:
        return command(args, settings)
    except BusTasksError as exc:
        print(f"bus-tasks {args.command}: error {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _connection(settings: Settings, *, confirm: bool = False) -> BusConnection:
    return BusConnection(
        settings.broker,
        confirm_publish=confirm,
        heartbeat_s=settings.heartbeat_s,
        connect_timeout_s=settings.connect_timeout_s,
        redis_key_prefix=settings.redis_key_prefix,
    )


def _client(args: argparse.Namespace, settings: Settings) -> TasksClient:
    timeout = args.timeout if args.timeout is not None else settings.rpc_timeout_s
    return TasksClient(_connection(settings), timeout_s=timeout)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    return serve(settings.with_overrides(data_dir=args.data_dir))


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return run_demo(sys.stdout, storage_tasks=args.storage_tasks)


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        if args.legacy == "info":
            info = client.get_all_tasks_info()
            print(codec.dumps(info).decode() if args.json else render.info_table(info))
        elif args.legacy == "statuses":
            statuses = client.get_all_tasks_statuses()
            print(codec.dumps(statuses).decode() if args.json else render.statuses_table(statuses))
        else:
            options = {"match": args.match} if args.match != "any" else None
            tasks = client.get_all_tasks(args.tag, options)
            print(codec.dumps(tasks).decode() if args.json else render.tasks_table(tasks))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        status = client.get_task_status(args.task_id)
        print(codec.dumps(status).decode() if args.json else render.statuses_table({args.task_id: status}))
    return 0


def _control(method: str) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        with _client(args, settings) as client:
            result = getattr(client, method)(args.task_id)
            print(codec.dumps(result).decode() if args.json else f"{args.command} {args.task_id}: ok")
        return 0

    return command


def cmd_inject(args: argparse.Namespace, settings: Settings) -> int:
    with _connection(settings, confirm=True) as connection:
        publisher = TaskPublisher(connection, args.subsystem)
        for _ in range(args.count):
            record = publisher.create(args.verb, args.tag, state=args.state)
            print(record.id)
    return 0


def cmd_retag(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        task_id = args.task_id
        details = client.get_all_tasks().get(task_id.lower())
        if details is None:
            client.get_task_status(task_id)  # raises the aggregator's own 401 / 1000
            return EXIT_ERROR
    with _connection(settings, confirm=True) as connection:
        publisher = TaskPublisher(connection, details["subsystem"])
        publisher.adopt(record_from_details(details))
        record = publisher.retag(details["id"], args.tag)
        print(
            codec.dumps(list(record.tags)).decode() if args.json else f"{record.id}: tags {list(record.tags)}"
        )
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    return simulate(
        settings,
        kind=args.kind,
        subsystem=args.subsystem,
        tasks=args.tasks,
        interval_s=args.interval,
    )


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "serve": cmd_serve,
    "demo": cmd_demo,
    "tasks": cmd_tasks,
    "status": cmd_status,
    "stop": _control("stop_task"),
    "revert": _control("revert_task"),
    "clear": _control("clear_task"),
    "inject": cmd_inject,
    "retag": cmd_retag,
    "simulate": cmd_simulate,
}
