"""docs/monitoring/: the alert and recording rules and the Grafana dashboard, as the tests read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
RULES = MONITORING / "bus_tasks.rules.yml"
RULES_TEST = MONITORING / "bus_tasks.rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"


def rules() -> list[dict[str, Any]]:
    """Every rule of every group."""
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def expressions() -> dict[str, str]:
    """Where (a rule, a panel's query) -> its PromQL, for the rules and the dashboard together."""
    found = {f"rule {rule.get('alert') or rule['record']}": rule["expr"] for rule in rules()}
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return found
