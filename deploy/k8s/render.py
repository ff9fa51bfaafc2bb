"""Write deploy/k8s/base/ from the chart's production render (`make k8s-manifests`).

The chart (helm/facerestore) is rendered through the Helm SDK (helm-python-sdk, no helm
binary) with the production profile, helm/facerestore/ci/gpu-values.yaml, as
`helm install facerestore helm/facerestore -n facerestore -f .../gpu-values.yaml` would.
The one value added is `namespace.create=true`: the chart's own Namespace object, with its
Pod Security Admission labels, since `kubectl apply` creates no namespace as
`helm install --create-namespace` does. The plain manifests are that render less what only
Helm uses: its labels (`helm.sh/chart`, `app.kubernetes.io/managed-by`) and the chart's test
hooks; every namespaced object names its namespace. Objects that the chart runs as hooks
(the Job that creates the JWT keys Secret before install) become ordinary objects: kubectl
applies them with the rest.

tests/deploy/test_k8s_manifests.py renders the chart again and checks that
`kubectl kustomize deploy/k8s/overlays/production` still gives exactly this.
"""

from __future__ import annotations

import argparse
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "facerestore"
PRODUCTION_VALUES = CHART_DIR / "ci" / "gpu-values.yaml"
K8S_DIR = ROOT / "deploy" / "k8s"
BASE_DIR = K8S_DIR / "base"
RELEASE = "facerestore"
NAMESPACE = "facerestore"

HELM_LABELS = frozenset({"helm.sh/chart", "app.kubernetes.io/managed-by"})
TEST_HOOKS = frozenset({"test", "test-success", "test-failure"})
# Kinds without a namespace (the ones a chart like ours may render).
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "RuntimeClass",
        "StorageClass",
        "IngressClass",
        "PersistentVolume",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ClusterIssuer",
    }
)
Manifest = dict[str, Any]


def render_chart(values_file: Path = PRODUCTION_VALUES, chart_dir: Path = CHART_DIR) -> dict[str, list[Manifest]]:
    """The chart's objects per template (path relative to templates/), as Helm renders them
    with these values and its own Namespace object."""
    values = helm_python.values_from_yaml(values_file.read_text(encoding="utf-8"))
    values.setdefault("namespace", {})["create"] = True
    with helm_python.Chart.load(chart_dir) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    prefix = f"{chart_dir.name}/templates/"
    templates: dict[str, list[Manifest]] = {}
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        objects = [doc for doc in yaml.safe_load_all(text) if doc]
        if objects:
            templates[path.removeprefix(prefix)] = objects
    return templates


def is_test_hook(manifest: Manifest) -> bool:
    hooks = manifest.get("metadata", {}).get("annotations", {}).get("helm.sh/hook", "")
    return any(hook.strip() in TEST_HOOKS for hook in hooks.split(","))


def _drop_helm_labels(node: Any) -> None:
    """Remove Helm's labels from every `metadata.labels` (pod templates included), never from selectors."""
    if isinstance(node, dict):
        labels = node.get("metadata", {}).get("labels") if isinstance(node.get("metadata"), dict) else None
        if isinstance(labels, dict):
            for label in HELM_LABELS & labels.keys():
                del labels[label]
        for value in node.values():
            _drop_helm_labels(value)
    elif isinstance(node, list):
        for item in node:
            _drop_helm_labels(item)


def plain(manifest: Manifest) -> Manifest:
    """One rendered object as it stands in deploy/k8s (a copy)."""
    copy: Manifest = deepcopy(manifest)
    _drop_helm_labels(copy)
    metadata = copy.setdefault("metadata", {})
    if copy.get("kind") not in CLUSTER_SCOPED_KINDS:
        metadata.setdefault("namespace", NAMESPACE)
    return copy


def plain_manifests(templates: dict[str, list[Manifest]]) -> dict[str, list[Manifest]]:
    """File name under base/ -> the objects it holds: the render less test hooks."""
    files: dict[str, list[Manifest]] = {}
    for template, objects in templates.items():
        kept = [plain(manifest) for manifest in objects if not is_test_hook(manifest)]
        if kept:
            files[template] = kept
    namespaces = [m for objects in files.values() for m in objects if m["kind"] == "Namespace"]
    if [m["metadata"]["name"] for m in namespaces] != [NAMESPACE]:
        raise RuntimeError(f"the chart rendered no Namespace {NAMESPACE} with namespace.create=true")
    return files


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (scripts, alert descriptions), so the files read like the chart."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _dump(objects: list[Manifest], header: str) -> str:
    body = "---\n".join(
        yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True) for manifest in objects
    )
    return header + body


def write_base(
    files: dict[str, list[Manifest]], base_dir: Path = BASE_DIR, values_file: Path = PRODUCTION_VALUES
) -> None:
    """Replace base/ with these files and a kustomization listing them."""
    values = values_file.relative_to(ROOT) if values_file.is_relative_to(ROOT) else values_file
    header = (
        f"# Generated by deploy/k8s/render.py from {CHART_DIR.relative_to(ROOT)} with {values}\n"
        "# (and namespace.create=true). Do not edit: change the chart and run `make k8s-manifests`.\n"
    )
    if base_dir.exists():
        for old in sorted(base_dir.rglob("*.yaml"), reverse=True):
            old.unlink()
    for name, objects in files.items():
        target = base_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_dump(objects, header), encoding="utf-8")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    }
    (base_dir / "kustomization.yaml").write_text(_dump([kustomization], header), encoding="utf-8")
    for folder in sorted((p for p in base_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=Path, default=PRODUCTION_VALUES, help="values file (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=BASE_DIR, help="folder to (re)write (default: %(default)s)")
    args = parser.parse_args(argv)
    files = plain_manifests(render_chart(args.values))
    write_base(files, args.out, args.values)
    count = sum(len(objects) for objects in files.values())
    print(f"wrote {count} objects in {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
