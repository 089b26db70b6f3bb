"""The operations files (ops/grafana/pm.json, ops/prometheus/alerts.yml), their PromQL expressions and
the metric names those name; and the metric names a Prometheus exposition exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = ROOT / "ops" / "grafana" / "pm.json"
ALERTS_FILE = ROOT / "ops" / "prometheus" / "alerts.yml"

# PromQL words that are not metric names: operators, modifiers, aggregation clauses.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
# `by (a, b)`, `on ()`, `group_left (x)`: label lists, not metric names.
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_NUMBER_WORDS = {"inf", "nan", "Inf", "NaN"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS_FILE.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows hold panels of their own when collapsed)."""
    panels: list[dict[str, Any]] = []
    for panel in model["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard's targets and of the alert rules."""
    found = [target["expr"] for panel in dashboard_panels(dashboard()) for target in panel["targets"]]
    return found + [rule["expr"] for rule in alert_rules()]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and strings left out)."""
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word in _KEYWORDS or word in _NUMBER_WORDS:
            continue  # a function or aggregation (`rate(`, `sum (`), or not a name
        names.add(word)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every name a Prometheus text exposition lets a query select: each family's samples, and the sample
    names its type implies even before a labelled metric has a child (`_total`, `_bucket`, `_sum`, ...)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(f"{family.name}{suffix}" for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
