"""The operations files hold up: the dashboard is a Grafana dashboard model (the fields Grafana needs, every
panel with a type, title, data source and PromQL targets, the data source a template variable); the alert
rules pass `promtool check rules` (when promtool is installed) and each has a severity, a summary and a
runbook that the README's Operations section answers; every metric they name is one the code defines;
and the expression parser those checks rest on finds metric names and only those."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY

import gateway.metrics  # noqa: F401 - registers the gateway's metrics
import pm.config.metrics  # noqa: F401 - registers the pipeline's metrics
from tests.support.ops_files import (
    ALERTS_FILE,
    ROOT,
    alert_rules,
    dashboard,
    dashboard_panels,
    exported_names,
    expressions,
    metric_names,
)


def test_the_parser_finds_metric_names_and_only_those() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, stage) (rate(pm_stage_batch_seconds_bucket{stage=~"a|b"}[5m])))'
    ) == {"pm_stage_batch_seconds_bucket"}
    assert metric_names(
        'sum(abs(pm_ledger_transit_minor{balance="pending"})) > 0 and on () sum(pm_intents_open) == 0'
    ) == {"pm_ledger_transit_minor", "pm_intents_open"}
    assert metric_names("time() - max(pm_x_seconds) > 1e3 or absent(pm_y)") == {"pm_x_seconds", "pm_y"}
    assert metric_names('up{job="a"} offset 5m / ignoring (instance) group_left (x) other[1h:5m]') == {"up", "other"}
    assert metric_names('rate(pm_a_total[$__rate_interval]) / sum without (le) (pm_b{x="by (y)"})') == {
        "pm_a_total",
        "pm_b",
    }


def test_the_dashboard_is_a_grafana_dashboard_model() -> None:
    model = dashboard()
    for field in ("title", "uid", "schemaVersion", "panels", "templating", "time", "version"):
        assert field in model, field
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", model["uid"])
    variables = {variable["name"]: variable for variable in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    panels = dashboard_panels(model)
    assert len(panels) >= 20
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat", "gauge", "table", "bargauge"), panel["title"]
        assert panel["title"] and panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and metric_names(target["expr"]), (panel["title"], target["expr"])


def test_the_dashboard_covers_what_operators_watch() -> None:
    shown = set().union(
        *(metric_names(target["expr"]) for p in dashboard_panels(dashboard()) for target in p["targets"])
    )
    for name in (
        "pm_intents_finished_total", "pm_intent_end_to_end_seconds_bucket", "pm_stream_backlog_entries",
        "pm_stream_pending_entries", "pm_dead_letter_entries", "pm_dead_letters_total",
        "pm_ledger_request_events_bucket", "pm_ledger_request_seconds_bucket", "pm_psp_calls_total",
        "pm_outbox_feed_delay_seconds", "pm_reviews_flagged_total", "pm_ledger_transit_minor",
    ):  # fmt: skip
        assert name in shown, name


def test_every_metric_named_is_one_the_code_defines() -> None:
    exposition = "".join(
        f"# HELP {metric.name} x\n# TYPE {metric.name} {metric.type}\n" for metric in REGISTRY.collect()
    )
    defined = exported_names(exposition)
    named = set().union(*(metric_names(expression) for expression in expressions()))
    assert named and named <= defined, sorted(named - defined)


def test_every_alert_has_a_severity_a_summary_and_a_runbook_in_the_readme() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) and len(names) >= 10
    readme = (ROOT / "README.md").read_text()
    operations = readme[readme.index("\n## Operations") :]
    operations = operations[: operations.find("\n## ", 1)] if "\n## " in operations[1:] else operations
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and "Operations" in rule["annotations"]["runbook"], rule["alert"]
        assert f"`{rule['alert']}`" in operations, f"README Operations does not explain {rule['alert']}"
    for needed in ("pm_intent_open_oldest_seconds", "pm_dead_letter_entries", "pm_ledger_transit_minor"):
        assert needed in " ".join(rule["expr"] for rule in rules), needed


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (Debian: apt-get install prometheus)"
)
def test_the_alert_rules_pass_promtool() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS_FILE)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", str(ALERTS_FILE.with_name("alerts_test.yml"))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERTS_FILE.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
