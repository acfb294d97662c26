"""``bus-tasks``: serve, demo, list, inspect, control and inject tasks."""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from bus_tasks import codec
from bus_tasks.client import TasksClient
from bus_tasks.config import CONFIG_ENV, ENV_PREFIX, ConfigError, Settings, config_file, redact_url
from bus_tasks.core.model import State, describe_validation
from bus_tasks.errors import BusTasksError
from bus_tasks.protocol.vdsm import record_from_details
from bus_tasks.subsystem.publisher import TaskPublisher
from bus_tasks.transport import BusConnection
from workers import render
from workers.demo import run_demo
from workers.serve import serve
from workers.simulate import simulate

log = logging.getLogger("bus_tasks.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A one-shot command gives up on an unreachable broker instead of retrying forever.
CLIENT_CONNECT_RETRIES = 3
# Errors of these libraries reaching main() mean the broker (or the Redis store) is unusable.
_BROKER_LIBRARIES = frozenset({"kombu", "amqp", "redis"})

SUBCOMMANDS: dict[str, str] = {
    "serve": "run the aggregator: consume events, answer getAllTasks",
    "demo": "run the whole system in one process on memory:// and print it",
    "tasks": "list tasks of a running aggregator (getAllTasks)",
    "status": "show one task's status (Task.getStatus)",
    "stop": "stop a task (Task.stop)",
    "revert": "revert a done task (Task.revert)",
    "clear": "clear a done task (Task.clear)",
    "inject": "publish test tasks with chosen tags, as a subsystem",
    "retag": "replace the tags of a task (republished as its subsystem)",
    "simulate": "run a simulated subsystem (storage or gluster) against a broker",
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="broker URL: amqp://user:pass@host:5672/vhost, redis://host:6379/0 or memory:// "
        f"(default: ${ENV_PREFIX}BROKER_URL, else broker_url in config/bus_tasks.toml)",
    )


def _client_options(parser: argparse.ArgumentParser) -> None:
    _broker_options(parser)
    parser.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="deadline of the call in seconds"
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bus-tasks",
        description="Task-status service for message-bus driven systems: one merged view of every "
        "task, queried with getAllTasks, VDSM-compatible.",
        epilog=f"Settings come from config/bus_tasks.toml (or the file ${CONFIG_ENV} names), then "
        f"{ENV_PREFIX}<SETTING> env vars, then options.",
    )
    parser.add_argument(
        "--log-level", type=_log_level, metavar="LEVEL", help=f"{', '.join(LOG_LEVELS)} (default: INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=SUBCOMMANDS[name], description=SUBCOMMANDS[name])

    serve = command("serve")
    _broker_options(serve)
    serve.add_argument("--data-dir", metavar="DIR", help="where the view is kept (default: data/)")

    demo = command("demo")
    demo.add_argument("--storage-tasks", type=_count, default=8, metavar="N", help="simulated storage tasks")

    tasks = command("tasks")
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
        help="VDSM's getAllTasksInfo or getAllTasksStatuses (spm tasks only) instead",
    )

    for name in ("status", "stop", "revert", "clear"):
        cmd = command(name)
        _client_options(cmd)
        cmd.add_argument("task_id", metavar="TASK_ID")

    inject = command("inject")
    _broker_options(inject)
    inject.add_argument("--subsystem", default="test", help="owning subsystem (default: test)")
    inject.add_argument("--verb", default="testTask", help="verb (default: testTask)")
    inject.add_argument("--tag", action="append", default=[], metavar="TAG", help="tag (repeatable)")
    inject.add_argument("--state", default="running", choices=[s.value for s in State], help="state")
    inject.add_argument("--count", type=_positive_int, default=1, metavar="N", help="how many tasks")

    retag = command("retag")
    _client_options(retag)
    retag.add_argument("task_id", metavar="TASK_ID")
    retag.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="new tag (repeatable; none clears)",
    )

    simulate = command("simulate")
    _broker_options(simulate)
    simulate.add_argument("kind", choices=("storage", "gluster"))
    simulate.add_argument("--subsystem", help="subsystem name (default: vdsm or gluster)")
    simulate.add_argument("--tasks", type=_positive_int, default=6, metavar="N", help="tasks per round")
    simulate.add_argument(
        "--interval", type=_positive_float, default=1.0, metavar="S", help="seconds between steps"
    )
    simulate.add_argument(
        "--keep-rounds",
        type=_positive_int,
        default=2,
        metavar="N",
        help="rounds listed at once, the running one included; the done tasks of older rounds "
        "are cleared (default: 2)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "tasks" and args.legacy and (args.tag or args.match != "any"):
        parser.error("tasks: --legacy lists spm tasks only; it takes no --tag or --match")
    try:
        settings = load_settings(broker_url=getattr(args, "broker", None), log_level=args.log_level)
    except ConfigError as exc:
        print(f"bus-tasks: bad configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The demo prints tables on stdout; its log stays quiet unless asked for.
    level = args.log_level or ("WARNING" if args.command == "demo" else settings.log_level.upper())
    logging.basicConfig(
        level=level,
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
    except Exception as exc:
        # Expected trouble of the surroundings (broker or store unreachable, refused, a data
        # directory that cannot be written) is one line; anything else keeps its traceback.
        library = type(exc).__module__.partition(".")[0]
        if not (isinstance(exc, OSError) or library in _BROKER_LIBRARIES):
            raise
        log.debug("%s failed", args.command, exc_info=True)
        where = f" (broker {redact_url(settings.broker)})" if library in ("kombu", "amqp") else ""
        print(f"bus-tasks {args.command}: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return EXIT_ERROR


def load_settings(**overrides: object) -> Settings:
    """Settings from the config file and the environment, then ``overrides``; misspellings are errors.

    Raises:
        ConfigError: naming every bad or unknown setting, never echoing its value.
    """
    try:
        source = config_file()
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    where = f"config file {source}, " if source is not None else ""
    try:
        settings = Settings().with_overrides(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {source}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(
            f"{describe_validation(exc, limit=20)} (from {where}{ENV_PREFIX}* env vars or options)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {source}: {exc}") from None
    return settings


def _connection(
    settings: Settings, *, confirm: bool = False, retries: int | None = CLIENT_CONNECT_RETRIES
) -> BusConnection:
    return BusConnection(
        settings.broker,
        confirm_publish=confirm,
        heartbeat_s=settings.heartbeat_s,
        connect_timeout_s=settings.connect_timeout_s,
        connect_retries=retries,
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
        print(
            codec.dumps(status).decode() if args.json else render.statuses_table({status["taskID"]: status})
        )
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
        ids = [publisher.create(args.verb, args.tag, state=args.state).id for _ in range(args.count)]
        # Publishing is pipelined: the ids are printed once the broker has every task.
        publisher.flush(settings.rpc_timeout_s)
    for task_id in ids:
        print(task_id)
    return 0


def cmd_retag(args: argparse.Namespace, settings: Settings) -> int:
    with _client(args, settings) as client:
        # The status call answers the aggregator's own 401 (unknown) or 1000 (not a UUID).
        task_id = client.get_task_status(args.task_id)["taskID"]
        details = client.get_all_tasks().get(task_id)
        if details is None:
            print(f"bus-tasks retag: task {task_id} was cleared meanwhile", file=sys.stderr)
            return EXIT_ERROR
    with _connection(settings, confirm=True) as connection:
        publisher = TaskPublisher(connection, details["subsystem"])
        publisher.adopt(record_from_details(details))
        record = publisher.retag(details["id"], args.tag)
        publisher.flush(settings.rpc_timeout_s)
    tags = list(record.tags)
    print(codec.dumps(tags).decode() if args.json else f"{record.id}: tags {tags}")
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    return simulate(
        settings,
        kind=args.kind,
        subsystem=args.subsystem,
        tasks=args.tasks,
        interval_s=args.interval,
        keep_rounds=args.keep_rounds,
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
