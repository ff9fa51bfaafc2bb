"""deploy/k8s against the chart it is generated from: the files are what deploy/k8s/render.py
writes from a fresh production render, `kubectl kustomize` of the production overlay gives
exactly those objects, every object of every overlay validates (Kubernetes 1.31, strict; KEDA
and Prometheus Operator kinds against the schemas in tests/deploy/schemas), and the dev
overlay does what its kustomization says."""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"


def _load_generator() -> Any:
    """deploy/k8s/render.py, the script that writes the base (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("facerestore_k8s_render", K8S_DIR / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.31.0"
OVERLAYS = sorted(path.parent.name for path in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))

Manifest = dict[str, Any]
Key = tuple[str, str, str, str]


def key(manifest: Manifest) -> Key:
    metadata = manifest["metadata"]
    return (manifest["apiVersion"], manifest["kind"], metadata.get("namespace", ""), metadata["name"])


def kustomize(overlay: str) -> list[Manifest]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make setup` installs it (Debian's kubernetes-client)"
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def by_key(manifests: list[Manifest]) -> dict[Key, Manifest]:
    result: dict[Key, Manifest] = {}
    for manifest in manifests:
        assert key(manifest) not in result, f"{key(manifest)} twice"
        result[key(manifest)] = manifest
    return result


def diff(before: str | Manifest, after: str | Manifest, names: tuple[str, str]) -> str:
    """A unified diff (its first 4000 characters) of two texts or two objects, for a failure message."""
    lines = [
        (value if isinstance(value, str) else yaml.safe_dump(value, sort_keys=True)).splitlines()
        for value in (before, after)
    ]
    return "\n".join(difflib.unified_diff(*lines, *names, lineterm=""))[:4000]


@pytest.fixture(scope="module")
def chart_files() -> dict[str, list[Manifest]]:
    """What the generator makes of the chart's production render, rendered now."""
    return generator.plain_manifests(generator.render_chart())


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[Manifest]]:
    return {overlay: kustomize(overlay) for overlay in OVERLAYS}


def test_there_is_a_production_and_a_dev_overlay() -> None:
    assert OVERLAYS == ["dev", "production"]


def test_the_base_is_what_the_generator_writes_from_the_chart_now(
    chart_files: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    generator.write_base(chart_files, tmp_path)
    base = generator.BASE_DIR
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.yaml"))
    committed = sorted(str(path.relative_to(base)) for path in base.rglob("*.yaml"))
    assert committed == written, "deploy/k8s/base is stale: run `make k8s-manifests`"
    for name in written:
        fresh, current = (tmp_path / name).read_text(), (base / name).read_text()
        changes = diff(current, fresh, ("committed", "render"))
        assert fresh == current, f"deploy/k8s/base/{name} is stale (`make k8s-manifests`):\n{changes}"


def test_production_overlay_equals_the_charts_production_render(
    chart_files: dict[str, list[Manifest]], overlays: dict[str, list[Manifest]]
) -> None:
    expected = by_key([manifest for objects in chart_files.values() for manifest in objects])
    actual = by_key(overlays["production"])
    assert sorted(actual) == sorted(expected)
    for object_key, manifest in expected.items():
        changes = diff(manifest, actual[object_key], ("chart", "kustomize"))
        assert actual[object_key] == manifest, f"{object_key} differs:\n{changes}"


def test_the_production_render_is_the_whole_chart_less_helm_tests() -> None:
    templates = generator.render_chart()
    raw = [manifest for objects in templates.values() for manifest in objects]
    plain = [manifest for objects in generator.plain_manifests(templates).values() for manifest in objects]
    assert sorted(key(generator.plain(m)) for m in raw if not generator.is_test_hook(m)) == sorted(map(key, plain))
    for manifest in plain:
        text = json.dumps(manifest)
        assert "helm.sh/chart" not in text and '"app.kubernetes.io/managed-by"' not in text, key(manifest)
        if manifest["kind"] not in generator.CLUSTER_SCOPED_KINDS:
            assert manifest["metadata"]["namespace"] == generator.NAMESPACE, key(manifest)
    (namespace,) = [manifest for manifest in plain if manifest["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _kubernetes_definitions() -> Registry:  # type: ignore[type-arg]
    """Kubernetes' own definitions (strict: no unknown fields), which the custom resource schemas
    refer to for ObjectMeta, LabelSelector and the like."""
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    definitions = json.loads((schemas / f"v{KUBERNETES_VERSION}-local-strict" / "_definitions.json").read_text())
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


KUBERNETES_DEFINITIONS = _kubernetes_definitions()


def validate(manifest: Manifest) -> None:
    """Kubernetes' own kinds with kubernetes-validate; custom resources (KEDA, the Prometheus
    Operator) against the repository's schema for their kind."""
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        group, _, version = manifest["apiVersion"].rpartition("/")
        path = SCHEMAS / f"{group}_{version}_{manifest['kind'].lower()}.json"
        assert path.is_file(), f"no schema for {manifest['apiVersion']} {manifest['kind']} in {SCHEMAS}"
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator(schema, registry=KUBERNETES_DEFINITIONS).validate(manifest)


def test_every_file_in_the_base_validates() -> None:
    files = sorted(generator.BASE_DIR.rglob("*.yaml"))
    assert files
    for path in files:
        for manifest in (document for document in yaml.safe_load_all(path.read_text()) if document):
            if manifest["kind"] == "Kustomization":
                continue
            try:
                validate(manifest)
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
                pytest.fail(f"{path.relative_to(ROOT)}: {key(manifest)}: {error}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_the_overlay_validates(overlay: str, overlays: dict[str, list[Manifest]]) -> None:
    assert overlays[overlay]
    for manifest in overlays[overlay]:
        try:
            validate(manifest)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(f"{overlay}: {key(manifest)}: {error}")


def test_validation_refuses_a_misspelt_field(overlays: dict[str, list[Manifest]]) -> None:
    """The checks above would notice a broken manifest, core kind or custom resource."""
    production = by_key(overlays["production"])
    deployment = next(m for k, m in production.items() if k[1] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    scaled = next(m for k, m in production.items() if k[1] == "ScaledObject")
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["maxReplicaCountt"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def inference_deployment(manifests: list[Manifest], group: str = "gpu") -> Manifest:
    name = f"facerestore-inference-{group}"
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == name]
    return deployment


def test_production_inference_is_on_gpus_and_autoscaled(overlays: dict[str, list[Manifest]]) -> None:
    production = overlays["production"]
    deployment = inference_deployment(production)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert container["image"].startswith("facerestore/inference-gpu:")
    assert {"name": "DEVICE", "value": "cuda"} in container["env"]
    assert {"name": "RESTORERS", "value": "gfpgan,codeformer"} in container["env"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["runtimeClassName"] == "nvidia"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    scaled = {m["spec"]["scaleTargetRef"]["name"] for m in production if m["kind"] == "ScaledObject"}
    assert scaled == {"facerestore-inference-gpu", "facerestore-inference-cpu"}
    classical = inference_deployment(production, "cpu")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "RESTORERS", "value": "classical"} in classical["env"]
    assert classical["image"].startswith("facerestore/inference:")


def test_dev_overlay_runs_inference_on_the_cpu_without_operators(overlays: dict[str, list[Manifest]]) -> None:
    production, dev = by_key(overlays["production"]), by_key(overlays["dev"])
    removed = {k for k in production.keys() - dev.keys()}
    assert {k[1] for k in removed} == {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
    assert dev.keys() <= production.keys()

    deployment = inference_deployment(overlays["dev"])
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert container["image"].startswith("facerestore/inference:")
    assert [e for e in container["env"] if e["name"] == "DEVICE"] == [{"name": "DEVICE", "value": "cpu"}]
    for section in ("requests", "limits"):
        assert "nvidia.com/gpu" not in container["resources"][section]
    for field in ("runtimeClassName", "nodeSelector", "tolerations", "affinity"):
        assert field not in pod, field
    # Everything else is production's: the rest of the inference pod, and every other object.
    production_deployment = inference_deployment(overlays["production"])
    production_container = production_deployment["spec"]["template"]["spec"]["containers"][0]
    assert sorted(e["name"] for e in container["env"]) == sorted(e["name"] for e in production_container["env"])
    assert container["volumeMounts"] == production_container["volumeMounts"]
    changed = {k for k in dev if dev[k] != production[k]}
    assert changed == {
        ("apps/v1", "Deployment", "facerestore", "facerestore-inference-gpu"),
        ("apps/v1", "Deployment", "facerestore", "facerestore-inference-cpu"),
    }
    # The classical group runs as in production, at one replica now that no KEDA keeps it there.
    classical, production_classical = (
        inference_deployment(overlays["dev"], "cpu"),
        inference_deployment(overlays["production"], "cpu"),
    )
    assert classical["spec"]["replicas"] == 1
    assert classical["spec"]["template"] == production_classical["spec"]["template"]


def production_workloads() -> list[Manifest]:
    return [m for m in kustomize("production") if m["kind"] == "Deployment"]


@pytest.mark.parametrize("deployment", production_workloads(), ids=lambda d: d["metadata"]["name"])
def test_production_pods_are_locked_down_sized_probed_and_served(
    deployment: Manifest, overlays: dict[str, list[Manifest]]
) -> None:
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items(), name
    for container in spec.get("initContainers", []) + spec["containers"]:
        where = f"{name}/{container['name']}"
        security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
        assert security.get("runAsNonRoot") is True, where
        assert security.get("runAsUser", 1) != 0, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= container.get("resources", {}).get(section, {}).keys(), where
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", container["image"]), f"{where}: untagged image"
    for container in spec["containers"]:
        # Model loading takes a while: the inference images start behind a startupProbe.
        loads_models = "/inference" in container["image"]
        for probe in ("readinessProbe", "livenessProbe", *(["startupProbe"] if loads_models else [])):
            assert container.get(probe), f"{name}/{container['name']}: {probe}"

    ports = [port for container in spec["containers"] for port in container.get("ports", [])]
    assert any(port["name"] == "metrics" and port["containerPort"] == 9100 for port in ports), name
    services = [
        m
        for m in overlays["production"]
        if m["kind"] == "Service" and m["spec"].get("selector", {}).items() <= pod["metadata"]["labels"].items()
    ]
    assert services, f"no Service selects the pods of {name}"
    for service in services:
        for service_port in service["spec"]["ports"]:
            target = service_port.get("targetPort", service_port["port"])
            assert any(target in (port.get("name"), port["containerPort"]) for port in ports), (
                f"Service {service['metadata']['name']} targets {target!r}, which {name} does not expose"
            )
