"""The shipped alert rules and Grafana dashboards (deploy/monitoring/, generated from the chart),
and the metric names their PromQL expressions read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"

# PromQL's functions, aggregations and keywords: every other bare name in an expression is a metric.
PROMQL_WORDS = frozenset(
    {
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
        "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
        "offset", "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "abs", "ceil",
        "floor", "round", "clamp", "clamp_min", "clamp_max", "absent", "absent_over_time", "vector", "scalar",
        "time", "timestamp", "label_replace", "label_join", "sort", "sort_desc", "avg_over_time",
        "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "last_over_time", "changes",
        "resets", "predict_linear", "exp", "ln", "log2", "log10", "sqrt", "inf", "nan",
    }
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (histogram series by their _bucket/_count/_sum name)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables left outside matchers
    names = set(re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)", text))
    return {name for name in names if name not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", name)}


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((MONITORING / "alerts.yaml").read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((MONITORING / "dashboards").glob("*.json"))
    }


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) of every query of every dashboard."""
    found = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((name, panel["title"], target["expr"]))
    return found


def every_expression() -> list[tuple[str, str]]:
    """(where, expression) for every alert and every dashboard query."""
    alerts = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    queries = [(f"{name}: {title}", expr) for name, title, expr in dashboard_expressions()]
    return alerts + queries


def rabbitmq_metrics() -> set[str]:
    """The documented list of what RabbitMQ's rabbitmq_prometheus plugin exports for us."""
    lines = (MONITORING / "rabbitmq-metrics.txt").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}
