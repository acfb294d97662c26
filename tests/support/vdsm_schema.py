"""Check results against VDSM's own API schema (fixtures/vdsm/vdsm-api.yml): keys, types, enum values."""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any

import yaml

from support.fixtures import fixture

SCHEMA = fixture("vdsm/vdsm-api.yml")
CHECKED = ("TaskStatus", "TaskInfo", "TaskDetails", "TaskState", "TaskResult")


@cache
def types() -> dict[str, dict[str, Any]]:
    """The schema's types by name (YAML anchors resolved by the loader)."""
    loaded = yaml.safe_load(SCHEMA.read_text())["types"]
    return {name: loaded[name] for name in CHECKED}


def _check_value(where: str, kind: Any, value: Any) -> list[str]:
    if isinstance(kind, dict):
        if kind.get("type") == "enum":
            allowed = set(kind["values"])
            return [] if value in allowed else [f"{where}: {value!r} not one of {sorted(allowed)}"]
        if kind.get("name") == "UUID":
            try:
                uuid.UUID(str(value))
            except ValueError:
                return [f"{where}: {value!r} is not a UUID"]
            return []
        return []
    expected = {"string": str, "int": int, "boolean": bool}.get(kind)
    if expected is not None and (
        not isinstance(value, expected) or isinstance(value, bool) is not (expected is bool)
    ):
        return [f"{where}: {value!r} is not {kind}"]
    return []


def problems(type_name: str, value: Any) -> list[str]:
    """What is wrong with ``value`` as VDSM's ``type_name`` (empty when it conforms); extra keys are allowed."""
    schema = types()[type_name]
    if not isinstance(value, dict):
        return [f"{type_name}: not an object: {value!r}"]
    found: list[str] = []
    for prop in schema["properties"]:
        name = prop["name"]
        if name not in value:
            found.append(f"{type_name}.{name} missing")
        else:
            found += _check_value(f"{type_name}.{name}", prop["type"], value[name])
    return found


def assert_conforms(type_name: str, value: Any) -> None:
    wrong = problems(type_name, value)
    assert not wrong, "; ".join(wrong)
