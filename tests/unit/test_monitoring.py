"""docs/monitoring/: promtool finds the rules valid and their unit tests passing; the alerts the
operators need exist; the dashboard's queries are well formed and read only bus_tasks' series
(their names are checked against a live ``/metrics`` in tests/integration/test_monitoring_live.py)."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from support.monitoring import RULES, RULES_TEST, dashboard, expressions, recorded, rules
from support.promql import SYNTHETIC, Selector, selectors
from support.tools import require_tool

ALERTS = {
    "BusTasksAggregatorDown",
    "BusTasksNoAggregator",
    "BusTasksReplicasDisagree",
    "BusTasksReplicaBehind",
    "BusTasksStoreFailing",
    "BusTasksDeadLettersRising",
    "BusTasksCallsDenied",
    "BusTasksHttpFrontDoorSaturated",
    "BusTasksHttpFrontDoorRefusing",
    "BusTasksStompFrontDoorSaturated",
    "BusTasksStompFrontDoorRefusing",
}
STOMP = "bus_tasks_stomp_"  # the series of `bus-tasks stomp --metrics`


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool", "prometheus")
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=60, check=False, cwd=RULES.parent
    )


def test_promtool_check_rules_finds_the_rules_valid() -> None:
    done = _promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_test_rules_passes_every_alert_s_unit_test() -> None:
    done = _promtool("test", "rules", RULES_TEST.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_the_operators_need_is_there_with_a_severity_and_a_summary() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) == ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name


def test_every_alert_rule_has_a_unit_test() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert tested == ALERTS
    # and each is seen firing at least once, not only staying quiet
    fired = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    assert fired == ALERTS


def test_every_query_names_a_bus_tasks_series_a_recorded_one_or_prometheus_own() -> None:
    made = recorded()
    for where, expr in expressions().items():
        names = {selector.name for selector in selectors(expr)}
        assert names, f"{where}: no metric in {expr!r}"
        unknown = {
            n for n in names if not n.startswith(("bus_tasks_", "process_")) and n not in made | SYNTHETIC
        }
        assert unknown == set(), f"{where}: {expr!r}"


def test_the_dashboard_asks_its_datasource_variable_and_selects_the_job_and_instances() -> None:
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["instance"]["definition"] == 'label_values(up{job="bus_tasks"}, instance)'
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for selector in selectors(target["expr"]):
                matchers = {(label, op, value) for label, op, value in selector.matchers}
                # `bus-tasks stomp` is scraped under a job of its own; the variable lists aggregators.
                own = {("job", "=", "bus_tasks_stomp")} if selector.name.startswith(STOMP) else None
                expected = own or {("job", "=", "bus_tasks"), ("instance", "=~", "$instance")}
                assert expected <= matchers, f"{panel['title']}: {target['expr']}"


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'histogram_quantile(0.99, sum by (method, le) (rate(x_bucket{job="j", a=~"$v"}[5m])))',
            [Selector("x_bucket", (("job", "=", "j"), ("a", "=~", "$v")))],
        ),
        ("max by (job) (a:b:c) != min without (le) (d)", [Selector("a:b:c", ()), Selector("d", ())]),
        ('absent(up{job="bus_tasks"} == 1)', [Selector("up", (("job", "=", "bus_tasks"),))]),
        ("m / n >= 0.9 and on (instance) o", [Selector("m", ()), Selector("n", ()), Selector("o", ())]),
    ],
)
def test_selectors_are_read_from_an_expression(expr: str, expected: list[Selector]) -> None:
    assert selectors(expr) == expected
