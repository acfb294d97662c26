"""``bus-tasks``: serve, demo, list, inspect, control and inject tasks."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from bus_tasks import codec
from bus_tasks.client import TasksClient
from bus_tasks.config import (
    CONFIG_ENV,
    CONFIG_FILE_NAME,
    DEFAULT_DATA_DIR,
    DEFAULT_LOG_LEVEL,
    ENV_PREFIX,
    LOG_LEVELS,
    Settings,
    load_settings,
    redact_url,
)
from bus_tasks.core.model import State
from bus_tasks.errors import BusTasksError, ConfigError
from bus_tasks.plugins import installed as installed_plugins
from bus_tasks.protocol.shapes import record_from_details
from bus_tasks.subsystem.publisher import TaskPublisher
from workers import render, wiring
from workers.demo import STORAGE_TASKS, run_demo
from workers.serve import serve
from workers.simulate import INTERVAL_S, KEEP_ROUNDS, SUBSYSTEMS, TASKS_PER_ROUND, simulate
from workers.stomp import DEFAULT_LISTEN, StompOptions, parse_listen, run_stomp

log = logging.getLogger("bus_tasks.cli")

Command = Callable[[argparse.Namespace, Settings], int]

EXIT_ERROR = 1
EXIT_USAGE = 2

# A one-shot command gives up on an unreachable broker instead of retrying forever.
CLIENT_CONNECT_RETRIES = 3
# Errors of these libraries reaching main() mean the broker (or the Redis store) is unusable.
_BROKER_LIBRARIES = frozenset({"kombu", "amqp", "redis"})


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


def _listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="broker URL: amqp://user:pass@host:5672/vhost, redis://host:6379/0 or memory:// "
        f"(default: ${ENV_PREFIX}BROKER_URL, else broker_url in {CONFIG_FILE_NAME})",
    )


def _client_options(parser: argparse.ArgumentParser) -> None:
    _broker_options(parser)
    parser.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="deadline of the call in seconds"
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each command, its summary and its function, written once here."""
    parser = argparse.ArgumentParser(
        prog="bus-tasks",
        description="Task-status service for message-bus driven systems: one merged view of every "
        "task, queried with getAllTasks, VDSM-compatible.",
        epilog=f"Settings come from {CONFIG_FILE_NAME} (or the file ${CONFIG_ENV} names), then "
        f"{ENV_PREFIX}<SETTING> env vars, then options.",
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default: {DEFAULT_LOG_LEVEL})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, func: Command) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=summary, description=summary)
        cmd.set_defaults(func=func)
        return cmd

    serve = command("serve", "run the aggregator: consume events, answer getAllTasks", cmd_serve)
    _broker_options(serve)
    serve.add_argument(
        "--data-dir", metavar="DIR", help=f"where the view is kept (default: {DEFAULT_DATA_DIR}/)"
    )

    stomp = command("stomp", "run the STOMP 1.2 front door (VDSM's wire) to a running aggregator", cmd_stomp)
    _broker_options(stomp)
    stomp.add_argument(
        "--listen", type=_listen, default=DEFAULT_LISTEN, metavar="HOST:PORT", help="(default: %(default)s)"
    )
    stomp.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    stomp.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    stomp.add_argument("--tls-ca", metavar="FILE", help="require client certificates signed by this CA")
    stomp.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="deadline of each forwarded request (default: rpc_timeout_s)",
    )

    demo = command("demo", "run the whole system in one process on memory:// and print it", cmd_demo)
    demo.add_argument(
        "--storage-tasks", type=_count, default=STORAGE_TASKS, metavar="N", help="simulated storage tasks"
    )

    tasks = command("tasks", "list tasks of a running aggregator (getAllTasks)", cmd_tasks)
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

    status = command("status", "show one task's status (Task.getStatus)", cmd_status)
    _client_options(status)
    status.add_argument("task_id", metavar="TASK_ID")

    for name, summary, method in (
        ("stop", "stop a task (Task.stop)", TasksClient.stop_task),
        ("revert", "revert a done task (Task.revert)", TasksClient.revert_task),
        ("clear", "clear a done task (Task.clear)", TasksClient.clear_task),
    ):
        control = command(name, summary, _control(method))
        _client_options(control)
        control.add_argument("task_id", metavar="TASK_ID")

    inject = command("inject", "publish test tasks with chosen tags, as a subsystem", cmd_inject)
    _broker_options(inject)
    inject.add_argument("--subsystem", default="test", help="owning subsystem (default: %(default)s)")
    inject.add_argument("--verb", default="testTask", help="verb (default: %(default)s)")
    inject.add_argument("--tag", action="append", default=[], metavar="TAG", help="tag (repeatable)")
    inject.add_argument("--state", default="running", choices=[s.value for s in State], help="state")
    inject.add_argument("--count", type=_positive_int, default=1, metavar="N", help="how many tasks")

    retag = command("retag", "replace the tags of a task (republished as its subsystem)", cmd_retag)
    _client_options(retag)
    retag.add_argument("task_id", metavar="TASK_ID")
    retag.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="new tag (repeatable; none clears)",
    )

    simulate = command(
        "simulate", "run a simulated subsystem (storage or gluster) against a broker", cmd_simulate
    )
    _broker_options(simulate)
    simulate.add_argument("kind", choices=tuple(SUBSYSTEMS))
    simulate.add_argument("--subsystem", help=f"subsystem name (default: {' or '.join(SUBSYSTEMS.values())})")
    simulate.add_argument(
        "--tasks", type=_positive_int, default=TASKS_PER_ROUND, metavar="N", help="tasks per round"
    )
    simulate.add_argument(
        "--interval", type=_positive_float, default=INTERVAL_S, metavar="S", help="seconds between steps"
    )
    simulate.add_argument(
        "--keep-rounds",
        type=_positive_int,
        default=KEEP_ROUNDS,
        metavar="N",
        help="rounds listed at once, the running one included; the done tasks of older rounds "
        "are cleared (default: %(default)s)",
    )
    for name, plugin in installed_plugins().items():
        if name in sub.choices:
            log.warning("plugin %r is not added: bus-tasks has a command of that name", name)
            continue
        cmd = command(name, plugin.summary, plugin.run)
        _broker_options(cmd)
        plugin.add_arguments(cmd)
    return parser


def summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each command of ``parser`` and its one-line summary, in the order ``--help`` lists them."""
    # argparse keeps its subcommands in an action it names private; this is the one place read.
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: cmd.description or "" for name, cmd in commands.choices.items()}


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
    command: Command = args.func
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


def _client(args: argparse.Namespace, settings: Settings) -> TasksClient:
    timeout = args.timeout if args.timeout is not None else settings.rpc_timeout_s
    return TasksClient(wiring.connect(settings, connect_retries=CLIENT_CONNECT_RETRIES), timeout_s=timeout)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    return serve(settings.with_overrides(data_dir=args.data_dir))


def cmd_stomp(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_ca and not args.tls_cert):
        print(
            "bus-tasks stomp: --tls-cert and --tls-key go together (and --tls-ca needs them)", file=sys.stderr
        )
        return EXIT_USAGE
    host, port = args.listen
    timeout = args.timeout if args.timeout is not None else settings.rpc_timeout_s
    options = StompOptions(host, port, timeout, args.tls_cert, args.tls_key, args.tls_ca)
    return run_stomp(settings, options)


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


def _control(method: Callable[[TasksClient, str], bool]) -> Command:
    """The command of a control call: stop, revert or clear one task."""

    def command(args: argparse.Namespace, settings: Settings) -> int:
        with _client(args, settings) as client:
            result = method(client, args.task_id)
            print(codec.dumps(result).decode() if args.json else f"{args.command} {args.task_id}: ok")
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
        # The status call answers the aggregator's own 401 (unknown) or 1000 (not a UUID).
        task_id = client.get_task_status(args.task_id)["taskID"]
        details = client.get_all_tasks().get(task_id)
        if details is None:
            print(f"bus-tasks retag: task {task_id} was cleared meanwhile", file=sys.stderr)
            return EXIT_ERROR
    with wiring.connect(settings, confirm_publish=True, connect_retries=CLIENT_CONNECT_RETRIES) as connection:
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
