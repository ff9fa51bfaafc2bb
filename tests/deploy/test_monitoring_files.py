"""The alert rules and Grafana dashboards have one source, the chart: deploy/monitoring/ is what
deploy/monitoring/render.py makes of it (the production render's rules as a plain Prometheus rule
file, the dashboards byte for byte), and the chart ships the dashboards as ConfigMaps that
Grafana's sidecar finds. Every dashboard query and alert reads metrics that the code defines or
that RabbitMQ's plugin exports (the running stack's endpoints are scraped in
tests/e2e/test_observability.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring_files import (
    MONITORING,
    ROOT,
    alert_rules,
    dashboard_expressions,
    dashboards,
    every_expression,
    metric_names,
    rabbitmq_metrics,
)

CHART_DASHBOARDS = ROOT / "helm" / "facerestore" / "files" / "dashboards"


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monitoring_render() -> Any:
    return _module(MONITORING / "render.py", "monitoring_render")


@pytest.fixture(scope="module")
def chart_render() -> Any:
    return _module(ROOT / "deploy" / "k8s" / "render.py", "k8s_render")


def test_the_shipped_alert_rules_are_the_charts(monitoring_render: Any) -> None:
    assert (MONITORING / "alerts.yaml").read_text(encoding="utf-8") == monitoring_render.alerts_text()
    rules = alert_rules()
    assert len(rules) >= 10
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    assert {
        "FacerestoreEventsDeadLettered",
        "FacerestoreOutboxStuck",
        "FacerestoreCodeSendFailures",
        "FacerestoreRestorationFailures",
    } <= {rule["alert"] for rule in rules}


def test_the_shipped_dashboards_are_the_charts_byte_for_byte() -> None:
    chart = {path.name: path.read_bytes() for path in CHART_DASHBOARDS.glob("*.json")}
    shipped = {path.name: path.read_bytes() for path in (MONITORING / "dashboards").glob("*.json")}
    assert set(chart) == {"facerestore-overview.json", "facerestore-models.json", "facerestore-queues.json"}
    assert shipped == chart


def test_dashboards_are_grafana_dashboards_with_a_query_in_every_panel() -> None:
    boards = dashboards()
    assert len({board["uid"] for board in boards.values()}) == len(boards)
    for name, board in boards.items():
        assert board["title"] and board["schemaVersion"] >= 36, name
        assert [v["name"] for v in board["templating"]["list"]][:1] == ["datasource"], name
        graphs = [panel for panel in board["panels"] if panel["type"] != "row"]
        assert graphs, name
        for panel in graphs:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, panel["title"])
            assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"])
            assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
    titles = {name: {panel["title"] for panel in board["panels"]} for name, board in boards.items()}
    assert "Rate-limit refusals by limit" in titles["facerestore-overview.json"]
    assert "Identity similarity p5 / p50" in titles["facerestore-models.json"]
    assert "Dead-letter queues" in titles["facerestore-queues.json"]


def _defined_in_code() -> str:
    sources = [*ROOT.glob("libs/common/facerestore_common/*.py"), *ROOT.glob("services/*/*_service/**/*.py")]
    return "\n".join(path.read_text(encoding="utf-8") for path in sources)


def test_every_query_reads_a_metric_the_code_defines_or_rabbitmq_exports() -> None:
    code = _defined_in_code()
    rabbitmq = rabbitmq_metrics()
    missing = []
    for where, expr in every_expression():
        names = metric_names(expr)
        assert names, where
        for name in names:
            family = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
            exported = name in rabbitmq or f'"{family}"' in code or f'"{name}"' in code
            # prometheus_client's own process collector (on Linux).
            exported = exported or name.startswith("process_")
            if not exported:
                missing.append((where, name))
    assert missing == []
    assert metric_names('sum(rate(made_up_metric_total{a="b"}[5m])) > 1') == {"made_up_metric_total"}
    assert len(dashboard_expressions()) >= 30


def test_the_chart_ships_the_dashboards_as_configmaps_grafana_finds(chart_render: Any, tmp_path: Path) -> None:
    templates = chart_render.render_chart()
    config_maps = templates["dashboards.yaml"]
    assert {cm["metadata"]["name"] for cm in config_maps} == {
        "facerestore-dashboard-overview",
        "facerestore-dashboard-models",
        "facerestore-dashboard-queues",
    }
    for config_map in config_maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"] == "Facerestore"
        ((file_name, text),) = config_map["data"].items()
        assert json.loads(text) == json.loads((CHART_DASHBOARDS / file_name).read_text(encoding="utf-8"))
    defaults = tmp_path / "values.yaml"
    defaults.write_text(yaml.safe_dump({}), encoding="utf-8")
    assert "dashboards.yaml" not in chart_render.render_chart(defaults)


def test_traces_go_to_the_configured_collector(chart_render: Any, tmp_path: Path) -> None:
    templates = chart_render.render_chart()
    (config_map,) = [obj for obj in templates["configmap.yaml"] if obj["kind"] == "ConfigMap"]
    data = config_map["data"]
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring.svc.cluster.local:4317"
    assert (data["OTEL_EXPORTER_OTLP_PROTOCOL"], data["OTEL_TRACES_SAMPLER"]) == ("grpc", "parentbased_traceidratio")
    policies = {obj["metadata"]["name"]: obj for obj in templates["networkpolicy.yaml"]}
    for component in ("gateway", "auth", "upload", "history", "admin", "inference-gpu", "inference-cpu", "embedder"):
        egress = policies[f"facerestore-{component}"]["spec"]["egress"]
        assert any(
            rule.get("ports") == [{"port": 4317, "protocol": "TCP"}]
            and rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
            for rule in egress
        ), component
    defaults = tmp_path / "values.yaml"
    defaults.write_text(yaml.safe_dump({}), encoding="utf-8")
    (plain,) = [obj for obj in chart_render.render_chart(defaults)["configmap.yaml"] if obj["kind"] == "ConfigMap"]
    assert not any(key.startswith("OTEL_") for key in plain["data"])
