"""``bus-tasks broker-setup``: print the RabbitMQ definitions of a deployment (SPEC 15)."""

from __future__ import annotations

import argparse
import json
import sys
from urllib.parse import unquote, urlsplit

from bus_tasks.broker_setup import Deployment, SetupError, definitions, new_passwords
from bus_tasks.config import Settings
from bus_tasks.errors import ConfigError

SUMMARY = "print RabbitMQ definitions: the topology and least-privilege users (import_definitions)"

DESCRIPTION = f"""{SUMMARY}.

The document declares, in one vhost, the exchanges, the event log (a stream; with the setting
event_log = "queue", an events queue per aggregator, named after it: run each aggregator with
aggregator_name = its identity), the RPC, dead-letter and control queues with their bindings,
and one user per identity with only what its role needs: a subsystem publishes its own routing
keys (task.NAME.*, subsystem.NAME.heartbeat) and reads its own control queue; only aggregators
read the event log (each its own events queue) and the RPC queue; nobody but RabbitMQ's
administrator can delete or redeclare what the document declares. Users log in by certificate
(RabbitMQ's rabbitmq_auth_mechanism_ssl: the certificate's CN is the user) unless --passwords.
Load it with: rabbitmqctl import_definitions FILE. Then run every process with identity = "broker"
and aggregators = [...] (see docs/security.md)."""

EPILOG = """example:
  bus-tasks broker-setup --vhost bus --subsystem vdsm --subsystem gluster \\
      --aggregator agg1 --operator engine --admin ops > bus.json
  rabbitmqctl import_definitions bus.json"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``broker-setup`` (its parser is made by ``workers/cli.py``)."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    roles = parser.add_argument_group("identities (each repeatable; one role per identity)")
    for flag, what in (
        ("--subsystem", "a subsystem, publishing as itself (NAME is the subsystem's name)"),
        ("--aggregator", "an aggregator (bus-tasks serve)"),
        ("--reader", "a client that lists and watches"),
        ("--operator", "a client that also stops, reverts and clears (authorization is the aggregator's)"),
        ("--admin", "an operator that also injects test tasks and reads the dead letters"),
        ("--front-door", "a front door (bus-tasks stomp) calling for its own clients"),
    ):
        roles.add_argument(flag, action="append", default=[], metavar="NAME", help=what)
    parser.add_argument(
        "--vhost",
        metavar="V",
        help="the RabbitMQ virtual host (default: the one of the broker URL)",
    )
    parser.add_argument(
        "--passwords",
        action="store_true",
        help="give every user a random password (stored hashed in the document) and print "
        "'NAME PASSWORD' lines on stderr, instead of certificate login",
    )
    parser.add_argument(
        "--test-subsystem",
        metavar="NAME",
        help="the subsystem of test tasks, owned by the aggregators ('' for none; "
        "default: setting test_subsystem)",
    )


def cmd_broker_setup(args: argparse.Namespace, settings: Settings) -> int:
    """Print the document on stdout (and the passwords, if made, on stderr).

    Raises:
        ConfigError: when the identities do not make one consistent document.
    """
    deployment = Deployment(
        subsystems=tuple(args.subsystem),
        aggregators=tuple(args.aggregator),
        readers=tuple(args.reader),
        operators=tuple(args.operator),
        admins=tuple(args.admin),
        front_doors=tuple(args.front_door),
        vhost=args.vhost if args.vhost is not None else vhost_of(settings.broker),
        queue_type=settings.queue_type,
        event_log_max_age=settings.event_log_max_age,
        event_log=settings.event_log,
        test_subsystem=args.test_subsystem if args.test_subsystem is not None else settings.test_subsystem,
    )
    try:
        identities = deployment.roles()
        passwords = new_passwords(identities) if args.passwords else None
        document = definitions(deployment, passwords)
    except SetupError as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(document, indent=2))
    for name, password in (passwords or {}).items():
        print(f"{name} {password}", file=sys.stderr)
    return 0


def vhost_of(url: str) -> str:
    """The virtual host a broker URL names, as kombu reads it (none: ``/``)."""
    path = urlsplit(url.split(";", 1)[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"
