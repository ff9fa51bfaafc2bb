"""Write deploy/monitoring/ from the chart (`make monitoring`, also run by `make k8s-manifests`).

One source of truth for the alerts and the dashboards, shared by the chart and by anyone who
runs Prometheus and Grafana without it:
- alerts.yaml: the chart's PrometheusRule (templates/prometheusrule.yaml), rendered with the
  production profile (ci/gpu-values.yaml, namespace facerestore), as a plain Prometheus rule file
  (`rule_files:` in prometheus.yml, or `promtool check rules alerts.yaml`);
- dashboards/*.json: the Grafana dashboards, byte for byte the chart's files/dashboards/*.json
  (import them in Grafana, or let a provisioning file point at this folder).

tests/deploy/test_monitoring_files.py checks that these files are what this script writes.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DASHBOARDS = ROOT / "helm" / "facerestore" / "files" / "dashboards"
OUT = ROOT / "deploy" / "monitoring"
HEADER = (
    "# Generated from helm/facerestore/templates/prometheusrule.yaml with ci/gpu-values.yaml by\n"
    "# deploy/monitoring/render.py (make monitoring): edit the chart, not this file.\n"
)


def _k8s_render() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_render", ROOT / "deploy" / "k8s" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alert_rules() -> dict[str, Any]:
    """The production render's rule groups, as a Prometheus rule file."""
    templates = _k8s_render().render_chart()
    (rule,) = [obj for obj in templates["prometheusrule.yaml"] if obj["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, as one writes them by hand."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _string)


def alerts_text() -> str:
    return HEADER + yaml.dump(alert_rules(), Dumper=_Dumper, sort_keys=False, width=120)


def main() -> int:
    (OUT / "alerts.yaml").write_text(alerts_text(), encoding="utf-8")
    target = OUT / "dashboards"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for dashboard in sorted(CHART_DASHBOARDS.glob("*.json")):
        shutil.copyfile(dashboard, target / dashboard.name)
    print(f"wrote {OUT / 'alerts.yaml'} and {len(list(target.glob('*.json')))} dashboards", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
