"""The command line of an installed plugin: its typed options as argparse options, and its run
with the process's stop and connections (the plugin contract knows no argparse)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from bus_tasks.config import Settings
from bus_tasks.core.model import describe_validation
from bus_tasks.errors import SubsystemTaken
from bus_tasks.plugins import Plugin, PluginHost, PluginOptions
from bus_tasks.workers import options, systemd, wiring
from bus_tasks.workers.commands import EXIT_ERROR, EXIT_USAGE, Command


def add_options(parser: argparse.ArgumentParser, model: type[PluginOptions]) -> None:
    """One option per field of ``model``: ``--interval-s`` for ``interval_s``, checked at once."""
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        seconds = name.endswith("_s")
        metavar = str(extra.get("metavar", "S" if seconds else name.upper()))
        described = field.description or name.replace("_", " ")
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=options.seconds if seconds else _value_check(field),
            metavar=metavar,
            **(
                {"required": True, "help": described}
                if field.is_required()
                else {"default": field.default, "help": f"{described} (default: %(default)s)"}
            ),
        )


def command(name: str, plugin: Plugin[Any]) -> Command:
    """What ``bus-tasks NAME`` does: run ``plugin`` until SIGTERM or SIGINT."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        given = {field: getattr(args, field) for field in plugin.options.model_fields if field in args}
        try:
            chosen = plugin.options.model_validate(given)
        except ValidationError as exc:  # a rule between options: each value was checked by argparse
            print(f"bus-tasks {name}: {describe_validation(exc)}", file=sys.stderr)
            return EXIT_USAGE
        log = logging.getLogger(f"bus_tasks.{name}")
        wiring.warn_if_identity_off(settings, log)
        stop = wiring.stop_on_signals(log)
        host = PluginHost(settings=settings, stop=stop, connect=wiring.connector(settings, stop))
        systemd.notify_when_ready(host.ready, stop)
        try:
            return plugin.run(chosen, host)
        except SubsystemTaken as exc:
            print(f"bus-tasks {name}: {exc.message}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _value_check(field: FieldInfo) -> Any:
    """An argparse ``type`` that checks one value as the field does, in a line a user reads."""
    # The field's type and its constraints (gt, max_length ...), if it has any.
    form: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(form)

    def check(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise argparse.ArgumentTypeError(f"{reason[:1].lower()}{reason[1:]}, not {text!r}") from None

    return check
