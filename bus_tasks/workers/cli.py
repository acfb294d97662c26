"""``bus-tasks``: serve, demo, list, inspect, call, control and inject tasks.

The command line is written once here: each command, its summary, its options and the function
that runs it (``workers/commands.py``). ``main`` turns every expected failure into one line on
stderr (one JSON object with ``--json``) and an exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from bus_tasks.client import TasksClient
from bus_tasks.config import CONFIG_ENV, CONFIG_FILE_NAME, ENV_PREFIX, load_settings
from bus_tasks.core.model import State
from bus_tasks.errors import BusTasksError, ConfigError
from bus_tasks.plugins import installed as installed_plugins
from bus_tasks.protocol.methods import MethodName
from bus_tasks.workers import EXIT_INTERRUPTED, broker_setup, commands, health, options, outcome, plugins
from bus_tasks.workers import serve as serving
from bus_tasks.workers.commands import EXIT_ERROR, EXIT_USAGE, Command
from bus_tasks.workers.demo import STORAGE_TASKS
from bus_tasks.workers.simulate import INTERVAL_S, KEEP_ROUNDS, SUBSYSTEMS, TASKS_PER_ROUND
from bus_tasks.workers.stomp import DEFAULT_LISTEN

log = logging.getLogger("bus_tasks.cli")

# 128 + SIGPIPE: what the shell reports for any tool a closed pipe stopped (see main).
EXIT_BROKEN_PIPE = 141
# The only command that keeps the view, and so the only one that reads the store settings.
STORE_COMMANDS = frozenset({"serve"})
# What memory:// serves: the whole system in one process (anything else has no peer on it).
ONE_PROCESS_COMMANDS = frozenset({"serve", "demo"})
# Processes that run for long, under a supervisor: they say at start where their settings came from.
SERVICE_COMMANDS = frozenset({"serve", "stomp", "simulate", "gluster"})


def build_parser(*, with_plugins: bool = True) -> argparse.ArgumentParser:
    """The whole command line: each command, its summary and its function, written once here;
    the installed plugins' commands too unless ``with_plugins`` is False."""
    parser = argparse.ArgumentParser(
        prog="bus-tasks",
        description="Task-status service for message-bus driven systems: one merged view of every "
        "task, queried with getAllTasks, VDSM-compatible.",
        epilog=f"Settings come from {CONFIG_FILE_NAME} (or the file ${CONFIG_ENV} names), then "
        f"{ENV_PREFIX}<SETTING> env vars, then options. --log-level and --broker may be given "
        "before the command or after it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {options.package_version()}")
    options.global_options(parser, broker=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, func: Command, *, broker: bool = True) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=summary, description=summary)
        cmd.set_defaults(func=func, takes_broker=broker)
        return cmd

    def client_command(name: str, summary: str, func: Command) -> argparse.ArgumentParser:
        cmd = command(name, summary, func)
        options.client_options(cmd)
        return cmd

    serve = command("serve", "run the aggregator: consume events, answer getAllTasks", serving.cmd_serve)
    options.global_options(serve, broker=True)
    serve.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"where the view is kept (default: {options.from_setting('data_dir')})",
    )
    serve.add_argument(
        "--http",
        type=serving.listen_address,
        metavar="HOST:PORT",
        help="also serve the HTTP API, the watch (server-sent events), /metrics, /healthz and the web "
        "view on HOST:PORT, a loopback address unless --http-allow-remote (port 0: a free one; "
        "default: setting http_listen, else off)",
    )
    serve.add_argument(
        "--http-allow-remote",
        action="store_true",
        default=None,
        help="let --http listen on an address other than loopback: whoever reaches it reads every task",
    )
    serve.add_argument(
        "--http-control",
        action="store_true",
        default=None,
        help="allow stop and clear over HTTP (the web view) to callers sending the setting http_token "
        "as Authorization: Bearer (default: setting http_control)",
    )

    stomp = command(
        "stomp", "run the STOMP 1.2 front door (VDSM's wire) to a running aggregator", commands.cmd_stomp
    )
    options.global_options(stomp, broker=True)
    stomp.add_argument(
        "--listen",
        type=options.listen,
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="where VDSM's clients connect (default: %(default)s)",
    )
    stomp.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    stomp.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    stomp.add_argument("--tls-ca", metavar="FILE", help="require client certificates signed by this CA")
    options.timeout_option(stomp, "deadline of each forwarded request")
    metrics_help = "serve /metrics here, no HOST: loopback (default: setting stomp_metrics, else off)"
    stomp.add_argument("--metrics", type=options.listen_text, metavar="HOST:PORT", help=metrics_help)
    for flag, metavar, kind, setting, what in (
        ("--connect-timeout", "S", options.seconds, "stomp_connect_timeout_s",
         "a client's TLS handshake and CONNECT must be done this long after it connected"),
        ("--max-connections", "N", options.positive_int, "stomp_max_connections",
         "clients at once; one more gets an ERROR frame"),
        ("--max-pending", "N", options.positive_int, "stomp_max_pending",
         "requests in flight per client; one more is answered -32013"),
        ("--max-outbuf-bytes", "BYTES", options.positive_int, "stomp_max_outbuf_bytes",
         "a client that leaves this many bytes of replies unread is disconnected"),
    ):  # fmt: skip
        stomp.add_argument(
            flag, type=kind, metavar=metavar, help=f"{what} (default: {options.from_setting(setting)})"
        )

    demo = command(
        "demo",
        "run the whole system in one process on memory:// and print it",
        commands.cmd_demo,
        broker=False,
    )
    options.global_options(demo, broker=False)
    demo.add_argument(
        "--storage-tasks",
        type=options.count,
        default=STORAGE_TASKS,
        metavar="N",
        help="simulated storage tasks (default: %(default)s)",
    )

    tasks = client_command("tasks", "list tasks of a running aggregator (getAllTasks)", commands.cmd_tasks)
    tasks.add_argument(
        "--tag",
        action="append",
        type=options.tag,
        metavar="TAG",
        help="only tasks with this tag (repeatable)",
    )
    tasks.add_argument(
        "--match",
        choices=("any", "all"),
        default="any",
        help="with several --tag: any or all of them (default: %(default)s)",
    )
    tasks.add_argument(
        "--legacy",
        choices=("info", "statuses"),
        help="VDSM's getAllTasksInfo or getAllTasksStatuses (spm tasks only) instead",
    )
    tasks.add_argument(
        "--watch",
        action="store_true",
        help="follow changes live: a table redrawn in place on a terminal, one line per change"
        " when piped (one JSON object per line with --json); Ctrl-C stops",
    )

    status = client_command("status", "show one task's status (Task.getStatus)", commands.cmd_status)
    status.add_argument("task_id", metavar="TASK_ID")

    info = client_command("info", "show one task's whole record (Task.getDetails)", commands.cmd_info)
    info.add_argument("task_id", metavar="TASK_ID")

    call = client_command(
        "call", "call any JSON-RPC method of the aggregator, as vdsm-client does", commands.cmd_call
    )
    call.add_argument(
        "method", metavar="METHOD", help=f"e.g. {MethodName.GET_ALL_TASKS} or {MethodName.GET_STATUS}"
    )
    call.add_argument(
        "params",
        nargs="*",
        type=options.param,
        metavar="KEY=VALUE",
        help='a parameter; VALUE is read as JSON when it is JSON (5, true, ["spm"], {...}, '
        '"quoted"), else as a string; KEY=@FILE reads the JSON in FILE',
    )

    for name, summary, method in (
        ("stop", "stop a task (Task.stop)", TasksClient.stop_task),
        ("revert", "revert a done task (Task.revert)", TasksClient.revert_task),
    ):
        control = client_command(name, summary, commands.control(method))
        control.add_argument("task_id", metavar="TASK_ID")

    clear = client_command("clear", "clear a done task (Task.clear)", commands.cmd_clear)
    clear.add_argument("task_id", metavar="TASK_ID")
    clear.add_argument(
        "--force",
        action="store_true",
        help="remove the task whatever its state, e.g. one whose subsystem will never come back "
        "(logged by the aggregator; its owner drops it if it comes back)",
    )

    client_command(
        "aggregators",
        "list the aggregators serving the broker: name, revision, tasks, uptime (Host.getAggregators)",
        commands.cmd_aggregators,
    )
    client_command(
        "subsystems",
        "list the subsystems: alive, lost or stopped, last seen, tasks (Host.getSubsystems)",
        commands.cmd_subsystems,
    )

    inject = command(
        "inject",
        "publish test tasks with chosen tags; the aggregator owns those of subsystem 'test' and answers "
        "their retag, stop and revert",
        commands.cmd_inject,
    )
    options.global_options(inject, broker=True)
    inject.add_argument("--subsystem", default="test", help="owning subsystem (default: %(default)s)")
    inject.add_argument("--verb", default="testTask", help="verb (default: %(default)s)")
    inject.add_argument(
        "--tag", action="append", type=options.tag, default=[], metavar="TAG", help="tag (repeatable)"
    )
    inject.add_argument(
        "--state", default="running", choices=[s.value for s in State], help="state (default: %(default)s)"
    )
    inject.add_argument(
        "--count",
        type=options.positive_int,
        default=1,
        metavar="N",
        help="how many tasks (default: %(default)s)",
    )

    retag = client_command(
        "retag",
        "replace the tags of a task, through its owner (Task.retag): its later updates keep them",
        commands.cmd_retag,
    )
    retag.add_argument("task_id", metavar="TASK_ID")
    retag.add_argument(
        "--tag",
        action="append",
        type=options.tag,
        default=[],
        metavar="TAG",
        help="new tag (repeatable; none clears)",
    )

    simulate = command(
        "simulate", "run a simulated subsystem (storage or gluster) against a broker", commands.cmd_simulate
    )
    options.global_options(simulate, broker=True)
    simulate.add_argument("kind", choices=tuple(SUBSYSTEMS))
    simulate.add_argument("--subsystem", help=f"subsystem name (default: {' or '.join(SUBSYSTEMS.values())})")
    simulate.add_argument(
        "--tasks",
        type=options.positive_int,
        default=TASKS_PER_ROUND,
        metavar="N",
        help="tasks per round (default: %(default)s)",
    )
    simulate.add_argument(
        "--interval-s",
        "--interval",  # its first name; --interval-s as gluster's, with the unit in it
        dest="interval",
        type=options.seconds,
        default=INTERVAL_S,
        metavar="S",
        help="seconds between steps (default: %(default)s)",
    )
    simulate.add_argument(
        "--keep-rounds",
        type=options.positive_int,
        default=KEEP_ROUNDS,
        metavar="N",
        help="rounds listed at once, the running one included; the done tasks of older rounds "
        "are cleared (default: %(default)s)",
    )
    health.add_arguments(client_command("health", health.SUMMARY, health.cmd_health))
    setup = command("broker-setup", broker_setup.SUMMARY, broker_setup.cmd_broker_setup)
    options.global_options(setup, broker=True)
    broker_setup.add_arguments(setup)
    for name, plugin in (installed_plugins() if with_plugins else {}).items():
        if name in sub.choices:
            log.warning("plugin %r is not added: bus-tasks has a command of that name", name)
            continue
        cmd = command(name, plugin.summary, plugins.command(name, plugin))
        options.global_options(cmd, broker=True)
        plugins.add_options(cmd, plugin.options)
    return parser


def summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each command of ``parser`` and its one-line summary, in the order ``--help`` lists them."""
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    # The help line of each command (its description may go on: broker-setup's does).
    return {choice.dest: choice.help or "" for choice in action._get_subactions()}


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # argparse keeps its subcommands in an action it names private; this is the one place read.
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The rules between arguments that argparse cannot state; a broken one is a usage error."""
    usage = _commands(parser)[args.command]
    if not args.takes_broker and "broker" in args:
        usage.error(f"{args.command} runs on memory:// and takes no --broker")
    if args.command == "tasks" and args.legacy and (args.tag or args.match != "any"):
        usage.error("--legacy lists spm tasks only; it takes no --tag or --match")
    if args.command == "tasks" and args.legacy and args.watch:
        usage.error("--watch follows getAllTasks; it takes no --legacy")
    if args.command == "call":
        keys = [key for key, _ in args.params]
        for key in keys:
            if keys.count(key) > 1:
                usage.error(f"parameter {key!r} is given more than once")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C at any point: the shell's status, no traceback
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (`bus-tasks tasks | head -1`): stop without a word,
        # as cat or grep do. The status is theirs too, 128 + SIGPIPE: a pipeline reports head's
        # status anyway, and `set -o pipefail` sees output that was not all read, not success.
        # stdout now goes to /dev/null, so that the interpreter's flush at exit fails no more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    # Loading the plugins imports their code (gluster's CLI runner and XML parsers): a built-in
    # command, serve above all (its start is timed, docs/performance.md), goes without them.
    parser = build_parser(with_plugins=False)
    if options.command_named(sys.argv[1:] if argv is None else argv) not in _commands(parser):
        parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    log_level = getattr(args, "log_level", None)
    try:
        settings = load_settings(
            with_store=args.command in STORE_COMMANDS,
            broker_url=getattr(args, "broker", None),
            log_level=log_level,
        )
    except ConfigError as exc:
        outcome.report(args, exc.code, f"bad configuration: {exc}", f"bus-tasks: bad configuration: {exc}")
        return EXIT_USAGE
    if settings.broker.lower().startswith("memory://") and args.command not in ONE_PROCESS_COMMANDS:
        message = (
            f"bad configuration: memory:// lives inside one process: no other process can answer"
            f" {args.command} over it (give a RabbitMQ or Redis URL, or try bus-tasks demo)"
        )
        outcome.report(args, ConfigError.code, message, f"bus-tasks {args.command}: {message}")
        return EXIT_USAGE
    # The demo prints tables on stdout; its log stays quiet unless asked for.
    level = log_level or ("WARNING" if args.command == "demo" else settings.log_level.upper())
    if getattr(args, "json", False) and not log_level:
        level = "ERROR"  # stderr is for the one JSON error a script parses (--log-level to see more)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command in SERVICE_COMMANDS:
        outcome.say_settings_source()
    command: Command = args.func
    try:
        status = command(args, settings)
        sys.stdout.flush()  # a closed pipe is found here, not at exit
        return status
    except BrokenPipeError as exc:
        if outcome.stdout_closed():
            raise  # main() ends quietly
        return outcome.trouble(args, settings, exc)  # a socket's peer went away, not stdout's reader
    except ConfigError as exc:  # found only once a command looks at its settings (serve's HTTP)
        message = f"bad configuration: {exc}"
        outcome.report(args, exc.code, message, f"bus-tasks {args.command}: {message}")
        return EXIT_USAGE
    except BusTasksError as exc:
        outcome.report(args, exc.code, exc.message, outcome.error_line(args.command, exc))
        return EXIT_ERROR
    except Exception as exc:
        library = type(exc).__module__.partition(".")[0]
        if not (isinstance(exc, OSError) or library in outcome.BROKER_LIBRARIES):
            raise
        return outcome.trouble(args, settings, exc)
