"""The Helm chart, rendered and linted by Helm's own Go SDK (helm-python-sdk), every object
validated against Kubernetes 1.31's schemas (kubernetes-validate, strict) or, for KEDA and
Prometheus Operator objects, the schemas in tests/deploy/schemas/. Each profile in
helm/facerestore/ci/ (and the chart's defaults) is rendered once per test session."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import importlib.resources
import importlib.util
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from facerestore_common.events import EventBus
from facerestore_common.topology import CONSUMER_BINDINGS, RESTORER_FAMILIES, embed_queue_name, inference_consumer

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "facerestore"
SCHEMA_DIR = Path(__file__).parent / "schemas"
RELEASE = "facerestore"
NAMESPACE = "facerestore"
KUBE_VERSION = "1.31.0"
PROFILES = [
    "default",
    *sorted(path.name.removesuffix("-values.yaml") for path in (CHART_DIR / "ci").glob("*-values.yaml")),
]

# Restoration workers run one Deployment per worker group; every profile has a "cpu" group (the
# chart's default group, and the classical group of the GPU profile).
SERVICES = ["gateway", "auth", "upload", "history", "admin", "inference-cpu", "embedder"]
GRPC_PORTS = {"auth": 50051, "upload": 50052, "history": 50053, "admin": 50054}
METRICS_PORT = 9100
DEPENDENCY_PORTS = {"mongodb": 27017, "rabbitmq": 5672, "redis": 6379, "minio": 9000, "qdrant": 6333}
# Who may call whom (issue 9): each gRPC service only from its callers; each in-chart dependency
# only from the services that use it.
GRPC_CALLERS = {
    "auth": {"gateway", "upload", "history", "admin"},
    "upload": {"gateway"},
    "history": {"gateway", "admin"},
    "admin": {"gateway"},
}
DEPENDENCY_USERS = {
    "mongodb": {"auth", "upload", "history", "admin", "inference-cpu", "embedder"},
    # The gateway publishes its rate-limit tallies (activity.recorded) for the admins' statistics.
    "rabbitmq": {"gateway", "auth", "upload", "history", "admin", "inference-cpu", "embedder"},
    # The restoration workers offer their models in the model registry, which the gateway reads;
    # history raises the library generations that the gateway's page cache checks.
    "redis": {"gateway", "auth", "history", "inference-cpu"},
    "minio": {"upload", "history", "inference-cpu", "embedder"},
    "qdrant": {"history"},
}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_v1alpha1_triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_v1_podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
}
POD_KINDS = ("Deployment", "StatefulSet", "Job")

Manifest = dict[str, Any]


def name_of(component: str) -> str:
    return f"{RELEASE}-{component}"


def values_key(component: str) -> str:
    """Where a component's settings are in the values: a worker group's defaults under inference."""
    return "inference" if component.startswith("inference-") else component


def profile_values(profile: str) -> dict[str, Any]:
    if profile == "default":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CHART_DIR / "ci" / f"{profile}-values.yaml").read_text(encoding="utf-8"))
    return loaded


# Profiles whose Secret the chart creates (the others name one the operator manages).
CHART_SECRET_PROFILES = [p for p in PROFILES if not profile_values(p).get("secrets", {}).get("existingSecret")]


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass
class Rendered:
    values: dict[str, Any]
    objects: list[Manifest]
    notes: str

    def of_kind(self, kind: str) -> list[Manifest]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> Manifest:
        (found,) = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        return found

    def find(self, kind: str, name: str) -> Manifest | None:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        return found[0] if found else None

    def deployment(self, component: str) -> Manifest:
        return self.get("Deployment", name_of(component))

    def pod_objects(self) -> list[Manifest]:
        return [obj for obj in self.objects if obj["kind"] in POD_KINDS]


def render(values: Mapping[str, Any]) -> Rendered:
    with helm_python.Chart.load(CHART_DIR) as chart:
        manifests = chart.render(dict(values), name=RELEASE, namespace=NAMESPACE)
    notes = "".join(text for path, text in manifests.items() if path.endswith("NOTES.txt"))
    objects = [
        obj
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for obj in yaml.safe_load_all(text)
        if obj
    ]
    return Rendered(dict(values), objects, notes)


@functools.cache
def rendered_profile(profile: str) -> Rendered:
    return render(profile_values(profile))


@pytest.fixture(scope="module", params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered(profile: str) -> Rendered:
    return rendered_profile(profile)


@pytest.fixture(scope="module")
def dev() -> Rendered:
    return rendered_profile("dev")


@pytest.fixture(scope="module")
def gpu() -> Rendered:
    return rendered_profile("gpu")


@pytest.fixture(scope="module")
def cpu() -> Rendered:
    return rendered_profile("cpu")


def container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def env_of(deployment: Manifest) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container(deployment).get("env", [])}


def config_data(rendered: Rendered) -> dict[str, str]:
    data: dict[str, str] = rendered.get("ConfigMap", f"{RELEASE}-config")["data"]
    return data


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector selects everything)."""
    selector = selector or {}
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for requirement in selector.get("matchExpressions", []):
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


# Lint, schema and validation


def test_profile_lints_clean_in_strict_mode(profile: str) -> None:
    report = helm_python.lint(
        CHART_DIR, profile_values(profile), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings and errors fail a strict lint.
    assert [message for message in report["messages"] if message["severity"] >= 2] == []


@functools.cache
def crd_registry() -> Registry:
    definitions = (
        importlib.resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{KUBE_VERSION}-local-strict"
        / "_definitions.json"
    )
    registry: Registry = Resource.from_contents(json.loads(definitions.read_text())) @ Registry()
    return registry


@functools.cache
def crd_validator(schema_file: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / schema_file).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, registry=crd_registry())


def validation_errors(obj: Manifest) -> list[str]:
    schema_file = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if schema_file is not None:
        return [
            f"{'.'.join(map(str, error.path))}: {error.message}"
            for error in crd_validator(schema_file).iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


def test_every_object_validates_against_its_schema(rendered: Rendered) -> None:
    problems = {
        f"{obj['kind']}/{obj['metadata']['name']}": errors
        for obj in rendered.objects
        if (errors := validation_errors(obj))
    }
    assert problems == {}
    assert all(obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE for obj in rendered.objects)


def test_validation_would_catch_a_misspelt_field(gpu: Rendered) -> None:
    """The validators are strict: a field that is not in the schema is an error, for built-in
    kinds and for the CRDs alike."""
    for kind, name, path in [
        ("Deployment", name_of("gateway"), ("spec", "replica")),
        ("ScaledObject", name_of("inference-gpu"), ("spec", "minReplicas")),
        ("ServiceMonitor", RELEASE, ("spec", "endpoints", 0, "intervall")),
        ("PrometheusRule", RELEASE, ("spec", "groups", 0, "rules", 0, "severity")),
        ("TriggerAuthentication", f"{name_of('inference-gpu')}-rabbitmq", ("spec", "secretTargetRef", 0, "secret")),
    ]:
        broken = copy.deepcopy(gpu.get(kind, name))
        target: Any = broken
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = "x"
        assert validation_errors(broken), f"{kind}: {path} was accepted"


def test_the_schema_refuses_misspelt_keys() -> None:
    misspellings: list[dict[str, Any]] = [
        {"gateway": {"replica": 3}},
        {"inference": {"keda": {"minReplicas": 0}}},
        {"ingres": {"enabled": True}},
        {"dependencies": {"mongodb": {"enable": False}}},
        {"inference": {"tolerations": [{"key": "nvidia.com/gpu", "operater": "Exists"}]}},
        {"inference": {"workerGroups": [{"name": "gpu", "restorers": ["gfpgan"], "keda": {"minReplicas": 0}}]}},
        {"inference": {"workerGroups": [{"name": "gpu", "restorer": ["gfpgan"]}]}},
    ]
    for misspelt in misspellings:
        with helm_python.Chart.load(CHART_DIR) as chart, pytest.raises(helm_python.HelmValuesError) as refused:
            chart.render(misspelt, name=RELEASE, namespace=NAMESPACE)
        assert "not allowed" in str(refused.value)
        report = helm_python.lint(CHART_DIR, misspelt, strict=True, namespace=NAMESPACE)
        assert report["errors"], misspelt


def schema_objects(node: Any, path: str = "$") -> Iterable[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from schema_objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from schema_objects(value, f"{path}[{index}]")


def test_every_object_in_the_values_schema_is_closed() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    # additionalProperties is false, or a schema for the values of a map (labels, env, resources).
    open_objects = [path for path, node in schema_objects(schema) if node.get("additionalProperties", True) is True]
    assert open_objects == []


# Workloads


def restricted_violations(pod_spec: Manifest) -> list[str]:
    """The Pod Security Standards' `restricted` profile, as the admission controller checks it."""
    problems = []
    pod_security = pod_spec.get("securityContext", {})
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume {volume['name']}: {kinds}")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            problems.append(key)
    for item in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        security = item.get("securityContext", {})
        where = item["name"]
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation")
        if security.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities not dropped")
        if set(security.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: capabilities added")
        if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
            problems.append(f"{where}: runAsNonRoot")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser 0")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile")
        if any("hostPort" in port for port in item.get("ports", [])):
            problems.append(f"{where}: hostPort")
    return problems


def test_every_pod_meets_the_restricted_pod_security_standard(rendered: Rendered) -> None:
    problems = {
        obj["metadata"]["name"]: found
        for obj in rendered.pod_objects()
        if (found := restricted_violations(obj["spec"]["template"]["spec"]))
    }
    assert problems == {}


def test_services_run_read_only_with_resources_and_probes(rendered: Rendered) -> None:
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        pod_spec = deployment["spec"]["template"]["spec"]
        assert pod_spec["automountServiceAccountToken"] is False, name
        for item in pod_spec["containers"]:
            assert item["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert {"cpu", "memory"} <= item["resources"]["requests"].keys(), name
            assert {"cpu", "memory"} <= item["resources"]["limits"].keys(), name
            assert item["readinessProbe"] and item["livenessProbe"], name
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", item["image"]), name


def test_every_service_has_a_metrics_port_its_service_exposes(rendered: Rendered) -> None:
    services = rendered.of_kind("Service")
    for deployment in rendered.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        ports = {port["name"]: port["containerPort"] for port in container(deployment)["ports"]}
        assert ports["metrics"] == METRICS_PORT, deployment["metadata"]["name"]
        env = env_of(deployment) | config_data(rendered)
        assert env["METRICS_PORT"] == str(METRICS_PORT)
        assert env["METRICS_HOST"] == "0.0.0.0"
        (service,) = [service for service in services if selects({"matchLabels": service["spec"]["selector"]}, labels)]
        for service_port in service["spec"]["ports"]:
            assert service_port["targetPort"] in ports, f"{service['metadata']['name']}: {service_port}"
        assert "metrics" in {port["name"] for port in service["spec"]["ports"]}


def test_probes_follow_the_services_health_endpoints(rendered: Rendered) -> None:
    for component in SERVICES:
        deployment = rendered.find("Deployment", name_of(component))
        if deployment is None:
            continue
        probes = container(deployment)
        if component in GRPC_PORTS:
            # NOT_SERVING while MongoDB or the broker is down takes the pod out of the Service...
            assert probes["readinessProbe"]["grpc"]["port"] == GRPC_PORTS[component]
            # ...without restarting it: liveness does not depend on the database.
            assert "grpc" not in probes["livenessProbe"]
            # Liveness waits until the server listens, i.e. start-up has waited for its dependencies.
            startup = probes["startupProbe"]
            assert startup["tcpSocket"] == {"port": "grpc"}
            dependency_wait = int(config_data(rendered)["STARTUP_WAIT_SECONDS"])
            assert startup["periodSeconds"] * startup["failureThreshold"] >= dependency_wait + 60
        elif component == "gateway":
            assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        else:
            assert probes["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
            startup = probes["startupProbe"]
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading gets minutes"
            dependency_wait = int(config_data(rendered)["STARTUP_WAIT_SECONDS"])
            assert startup["periodSeconds"] * startup["failureThreshold"] >= dependency_wait + 300


def test_a_longer_startup_wait_lengthens_the_grpc_services_startup_probe() -> None:
    rendered = render({"config": {"startupWaitSeconds": 300}})
    assert config_data(rendered)["STARTUP_WAIT_SECONDS"] == "300"
    for component in GRPC_PORTS:
        startup = container(rendered.deployment(component))["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300 + 60, component


def test_pods_roll_when_the_config_or_a_secret_changes() -> None:
    # Every value given, nothing generated: the same values render the same checksums.
    base = {
        "config": {"qdrantUrl": "http://qdrant:6333"},
        "dependencies": {dependency: {"enabled": False} for dependency in DEPENDENCY_PORTS},
        "secrets": {
            "generate": False,
            "mongoUrl": "mongodb://mongo:27017",
            "amqpUrl": "amqp://rabbit:5672/",
            "redisUrl": "redis://redis:6379/0",
            "s3Endpoint": "s3:9000",
            "s3AccessKey": "access",
            "s3SecretKey": "secret-key-1",
            "otpHmacSecret": "first-secret-value",
            "downloadTokenSecret": "download-secret",
            "pseudonymSecret": "pseudonym-secret",
        },
    }
    first, again = render(base), render(base)
    changed_secret = render(merge(base, {"secrets": {"otpHmacSecret": "second-secret-value"}}))
    changed_config = render(merge(base, {"logLevel": "DEBUG"}))

    def checksums(rendered: Rendered, component: str) -> dict[str, str]:
        annotations = rendered.deployment(component)["spec"]["template"]["metadata"]["annotations"]
        return {key: value for key, value in annotations.items() if key.startswith("checksum/")}

    for component in SERVICES:
        before = checksums(first, component)
        assert before.keys() == {"checksum/config", "checksum/secret"}
        assert checksums(again, component) == before, component
        secret_changed, config_changed = checksums(changed_secret, component), checksums(changed_config, component)
        assert secret_changed["checksum/secret"] != before["checksum/secret"], component
        assert secret_changed["checksum/config"] == before["checksum/config"], component
        assert config_changed["checksum/config"] != before["checksum/config"], component
        assert config_changed["checksum/secret"] == before["checksum/secret"], component


def test_a_managed_secret_is_checksummed_from_the_cluster(gpu: Rendered) -> None:
    """With secrets.existingSecret the checksum comes from the Secret's data as the cluster has it
    (Helm's lookup; empty when rendering offline), so `helm upgrade` rolls pods after it changed."""
    for deployment in gpu.of_kind("Deployment"):
        assert "checksum/secret" in deployment["spec"]["template"]["metadata"]["annotations"]
    assert gpu.of_kind("Secret") == []


# GPU inference and autoscaling


def test_gpu_inference_is_placed_on_gpu_nodes(gpu: Rendered) -> None:
    inference = gpu.deployment("inference-gpu")
    pod_spec = inference["spec"]["template"]["spec"]
    resources = container(inference)["resources"]
    assert str(resources["limits"]["nvidia.com/gpu"]) == "1"
    assert str(resources["requests"]["nvidia.com/gpu"]) == "1"
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec["tolerations"]
    assert pod_spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pod_spec["runtimeClassName"] == "nvidia"
    env = env_of(inference)
    assert env["DEVICE"] == "cuda", "a worker without CUDA must refuse to start, not fall back to the CPU"
    assert env["INFERENCE_ROLES"] == "restore"
    assert env["RESTORERS"] == "gfpgan,codeformer"
    assert container(inference)["image"].startswith("facerestore/inference-gpu:")
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "facerestore-models", "readOnly": True}
    mounts = {mount["name"]: mount for mount in container(inference)["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True

    # The CPU embedder keeps search working while the GPU workers are at zero.
    embedder = gpu.deployment("embedder")
    assert env_of(embedder)["INFERENCE_ROLES"] == "embed"
    assert env_of(embedder)["DEVICE"] == "cpu"
    assert container(embedder)["image"].startswith("facerestore/inference:")
    for deployment in gpu.of_kind("Deployment"):
        if deployment is not inference:
            assert "nvidia.com/gpu" not in json.dumps(container(deployment)["resources"]), deployment["metadata"][
                "name"
            ]
            assert "runtimeClassName" not in deployment["spec"]["template"]["spec"]


def test_placement_is_settable_for_every_service() -> None:
    placement = {
        "gpu": 2,
        "nodeSelector": {"pool": "special"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "facerestore", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
                ]
            }
        },
        "runtimeClassName": "gvisor",
        "priorityClassName": "facerestore-high",
    }
    rendered = render({values_key(component): placement for component in SERVICES})
    assert all(not validation_errors(obj) for obj in rendered.objects)
    for component in SERVICES:
        pod_spec = rendered.deployment(component)["spec"]["template"]["spec"]
        assert pod_spec["nodeSelector"] == placement["nodeSelector"], component
        assert pod_spec["tolerations"] == placement["tolerations"], component
        assert pod_spec["affinity"] == placement["affinity"], component
        assert pod_spec["runtimeClassName"] == "gvisor", component
        assert pod_spec["priorityClassName"] == "facerestore-high", component
        resources = container(rendered.deployment(component))["resources"]
        assert str(resources["limits"]["nvidia.com/gpu"]) == str(resources["requests"]["nvidia.com/gpu"]) == "2"


def test_weights_can_be_fetched_and_checked_by_an_init_container() -> None:
    pins = hashlib.sha256(b"weights").hexdigest() + "  GFPGANv1.4.pth\n"
    fetch = {"enabled": True, "bucket": "models", "prefix": "v1/", "sha256sums": pins, "sizeLimit": "2Gi"}
    rendered = render(merge(profile_values("gpu"), {"inference": {"models": {"existingClaim": "", "fetch": fetch}}}))
    assert not validation_errors(rendered.deployment("inference-gpu"))
    pod_spec = rendered.deployment("inference-gpu")["spec"]["template"]["spec"]
    (init,) = pod_spec["initContainers"]
    assert init["command"] == ["python", "-m", "inference_service.fetch_weights"]
    assert importlib.util.find_spec("inference_service.fetch_weights") is not None
    assert init["image"] == container(rendered.deployment("inference-gpu"))["image"]
    env = {item["name"]: item.get("value", item.get("valueFrom")) for item in init["env"]}
    assert env["MODEL_SHA256SUMS"] == pins
    assert (env["MODELS_BUCKET"], env["MODELS_PREFIX"]) == ("models", "v1/")
    assert env["MODEL_DIR"] == env_of(rendered.deployment("inference-gpu"))["MODEL_DIR"]
    assert {"S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY"} <= env.keys()
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    assert volumes["models"] == {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}}
    (init_mount,) = [mount for mount in init["volumeMounts"] if mount["name"] == "models"]
    assert not init_mount.get("readOnly")
    worker = container(rendered.deployment("inference-gpu"))
    (worker_mount,) = [m for m in worker["volumeMounts"] if m["name"] == "models"]
    assert worker_mount["readOnly"] is True
    assert restricted_violations(pod_spec) == []
    # A claim and a fetch at once is refused, as is a fetch with nothing pinned.
    for models in ({"existingClaim": "claim", "fetch": fetch}, {"fetch": {**fetch, "sha256sums": ""}}):
        with helm_python.Chart.load(CHART_DIR) as chart, pytest.raises(helm_python.HelmError):
            chart.render({"inference": {"models": models}}, name=RELEASE, namespace=NAMESPACE)


def worker_groups(rendered: Rendered) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """Group name -> (its restorer families, its KEDA settings: the defaults, the group's over them)."""
    chart_defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))["inference"]
    inference = merge(chart_defaults, rendered.values.get("inference", {}))
    return {
        group["name"]: (group["restorers"], {**inference["keda"], **group.get("keda", {})})
        for group in inference["workerGroups"]
    }


@pytest.mark.parametrize("profile_name", ["gpu", "cpu"])
def test_keda_scales_each_worker_group_on_its_families_queues(profile_name: str) -> None:
    rendered = rendered_profile(profile_name)
    groups = worker_groups(rendered)
    assert set(groups) == ({"gpu", "cpu"} if profile_name == "gpu" else {"cpu"})
    bus = EventBus("amqp://unused", "facerestore.events", "facerestore", "test")
    for group, (families, keda) in groups.items():
        component = f"inference-{group}"
        inference = rendered.deployment(component)
        assert "replicas" not in inference["spec"], "KEDA owns the replica count"
        assert env_of(inference)["RESTORERS"] == ",".join(families)

        scaled = rendered.get("ScaledObject", name_of(component))["spec"]
        assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name_of(component)}
        assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (
            keda["minReplicaCount"],
            keda["maxReplicaCount"],
        )
        assert scaled["cooldownPeriod"] == keda["cooldownPeriod"]
        # One trigger per family: the queue the code routes that family's work to.
        queues = [trigger["metadata"]["queueName"] for trigger in scaled["triggers"]]
        assert queues == [bus.queue_name(inference_consumer(family)) for family in families]
        assert all(inference_consumer(family) in CONSUMER_BINDINGS for family in families)
        for trigger in scaled["triggers"]:
            assert trigger["type"] == "rabbitmq"
            assert trigger["metadata"]["mode"] == "QueueLength"
            assert int(trigger["metadata"]["value"]) == keda["queueLength"]
            assert int(trigger["metadata"]["activationValue"]) == keda["activationQueueLength"]
            # Authenticated with the AMQP_URL the workers themselves use.
            authentication = rendered.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
            (secret_ref,) = authentication["spec"]["secretTargetRef"]
            assert secret_ref["parameter"] == "host"
            assert env_of(inference)["AMQP_URL"]["secretKeyRef"] == {
                "name": secret_ref["name"],
                "key": secret_ref["key"],
            }

        # Scale-down kind to GPUs that take minutes to start: one pod at a time, after a long window.
        behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
        assert behavior["scaleDown"]["policies"] == [
            {"type": "Pods", "value": 1, "periodSeconds": keda["scaleDownPeriodSeconds"]}
        ]


def test_the_gpu_profile_serves_every_family_gpu_models_on_gpus_classical_on_cpus(gpu: Rendered) -> None:
    served = {
        family: deployment["metadata"]["name"]
        for deployment in gpu.of_kind("Deployment")
        for family in env_of(deployment).get("RESTORERS", "").split(",")
        if family
    }
    assert served == {
        "gfpgan": name_of("inference-gpu"),
        "codeformer": name_of("inference-gpu"),
        "classical": name_of("inference-cpu"),
    }
    assert set(served) == set(RESTORER_FAMILIES)
    cpu_group = gpu.deployment("inference-cpu")
    assert env_of(cpu_group)["DEVICE"] == "cpu" and "nvidia.com/gpu" not in json.dumps(container(cpu_group))
    assert container(cpu_group)["image"].startswith("facerestore/inference:")
    # Both analyse faces with the same model (one embedding space) from the same weights.
    for group in ("inference-gpu", "inference-cpu"):
        assert env_of(gpu.deployment(group))["FACE_ANALYZER"] == "insightface"
        volumes = {volume["name"]: volume for volume in gpu.deployment(group)["spec"]["template"]["spec"]["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "facerestore-models"


def test_a_worker_group_overrides_the_inference_defaults_key_by_key() -> None:
    rendered = render(
        {
            "inference": {
                "env": {"RESTORE_BATCH_SIZE": "2", "LOG_LEVEL": "DEBUG"},
                "nodeSelector": {"pool": "general"},
                "workerGroups": [
                    {"name": "cpu", "restorers": ["classical"]},
                    {
                        "name": "big",
                        "restorers": ["codeformer", "gfpgan"],
                        "gpu": 1,
                        "keda": {"enabled": True, "minReplicaCount": 0},
                        "env": {"RESTORE_BATCH_SIZE": "8"},
                        "nodeSelector": {"pool": "gpu"},
                    },
                ],
            }
        }
    )
    cpu_group, big = rendered.deployment("inference-cpu"), rendered.deployment("inference-big")
    assert all(not validation_errors(obj) for obj in rendered.objects)
    # Maps merge one level deep; placement is the group's own.
    assert (env_of(big)["RESTORE_BATCH_SIZE"], env_of(big)["LOG_LEVEL"]) == ("8", "DEBUG")
    assert env_of(cpu_group)["RESTORE_BATCH_SIZE"] == "2"
    assert big["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert cpu_group["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "general"}
    scaled = rendered.get("ScaledObject", name_of("inference-big"))["spec"]
    assert scaled["minReplicaCount"] == 0 and scaled["maxReplicaCount"] == 4  # the default's maximum kept
    assert rendered.find("ScaledObject", name_of("inference-cpu")) is None
    # A group with a GPU runs the GPU image; the families are as the group lists them.
    assert container(big)["image"].startswith("facerestore/inference-gpu:")
    assert container(cpu_group)["image"].startswith("facerestore/inference:")
    assert env_of(big)["RESTORERS"] == "codeformer,gfpgan"
    # Scaled to zero, the group keeps offering its models, so that requests for them are accepted.
    assert env_of(big)["STANDBY_OFFER_SECONDS"] == "86400" and "STANDBY_OFFER_SECONDS" not in env_of(cpu_group)
    # Each group is its own workload: its pods, budget and policy.
    for group in (cpu_group, big):
        labels = group["spec"]["template"]["metadata"]["labels"]
        others = [d for d in rendered.of_kind("Deployment") if d is not group]
        assert not any(selects(group["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in others)
        assert len([b for b in rendered.of_kind("PodDisruptionBudget") if selects(b["spec"]["selector"], labels)]) == 1
        assert any(selects(p["spec"]["podSelector"], labels) for p in rendered.of_kind("NetworkPolicy"))


@pytest.mark.parametrize(
    "groups",
    [
        [{"name": "gpu", "restorers": ["gfpgan"]}, {"name": "gpu", "restorers": ["classical"]}],
        [{"name": "cpu", "restorers": ["restoreformer"]}],
        [{"name": "cpu", "restorers": []}],
        [{"name": "Has_Capitals", "restorers": ["classical"]}],
        [{"name": "gpu", "restorers": ["gfpgan"], "keda": {"enabled": True, "minReplicaCount": 5}}],
    ],
)
def test_worker_groups_that_cannot_work_are_refused(groups: list[dict[str, Any]]) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart, pytest.raises(helm_python.HelmError):
        chart.render({"inference": {"workerGroups": groups}}, name=RELEASE, namespace=NAMESPACE)


def test_gpu_inference_may_scale_to_zero(gpu: Rendered) -> None:
    assert gpu.get("ScaledObject", name_of("inference-gpu"))["spec"]["minReplicaCount"] == 0
    assert env_of(gpu.deployment("inference-gpu"))["STANDBY_OFFER_SECONDS"] == "86400"
    assert gpu.get("ScaledObject", name_of("inference-cpu"))["spec"]["minReplicaCount"] >= 1
    embedder_hpa = gpu.get("HorizontalPodAutoscaler", name_of("embedder"))
    assert embedder_hpa["spec"]["minReplicas"] >= 1, "search needs an embedder while inference is at zero"


def test_the_embed_queue_is_served_by_the_embedder_role(gpu: Rendered) -> None:
    assert embed_queue_name(config_data(gpu)["QUEUE_PREFIX"]) == "facerestore.embed"
    assert env_of(gpu.deployment("embedder"))["INFERENCE_ROLES"] == "embed"


@pytest.mark.parametrize("component", ["gateway", "upload", "history"])
def test_hpas_scale_the_stateless_services_on_cpu(gpu: Rendered, component: str) -> None:
    hpa = gpu.get("HorizontalPodAutoscaler", name_of(component))
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name_of(component)}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_only_workloads_without_an_autoscaler_set_replicas(rendered: Rendered) -> None:
    scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in rendered.of_kind("HorizontalPodAutoscaler")}
    scaled |= {obj["spec"]["scaleTargetRef"]["name"] for obj in rendered.of_kind("ScaledObject")}
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        assert ("replicas" in deployment["spec"]) == (name not in scaled), name


def test_every_service_has_a_disruption_budget(rendered: Rendered) -> None:
    budgets = rendered.of_kind("PodDisruptionBudget")
    for deployment in rendered.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (budget,) = [budget for budget in budgets if selects(budget["spec"]["selector"], labels)]
        assert budget["spec"]["maxUnavailable"] == 1, deployment["metadata"]["name"]


def test_multi_replica_services_spread_over_zones_and_nodes(gpu: Rendered, dev: Rendered) -> None:
    for component in ["gateway", "auth", "upload", "history", "admin", "embedder", "inference-gpu", "inference-cpu"]:
        pod = gpu.deployment(component)["spec"]["template"]
        constraints = pod["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert all(selects(c["labelSelector"], pod["metadata"]["labels"]) for c in constraints), component
    # One pod has nothing to spread.
    for component in ["auth", "admin", "inference-cpu"]:
        assert "topologySpreadConstraints" not in dev.deployment(component)["spec"]["template"]["spec"], component


# gRPC across pods


def test_grpc_targets_resolve_headless_services(rendered: Rendered) -> None:
    targets = {key: value for key, value in config_data(rendered).items() if key.endswith("_GRPC_TARGET")}
    assert targets.keys() == {f"{component.upper()}_GRPC_TARGET" for component in GRPC_PORTS}
    for component, port in GRPC_PORTS.items():
        target = targets[f"{component.upper()}_GRPC_TARGET"]
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
        assert match, target
        service = rendered.get("Service", match.group(1))
        assert service["spec"]["clusterIP"] == "None", "a ClusterIP would pin each client to one pod"
        assert int(match.group(2)) in {p["port"] for p in service["spec"]["ports"]}
        pods = rendered.deployment(component)["spec"]["template"]["metadata"]["labels"]
        assert selects({"matchLabels": service["spec"]["selector"]}, pods)
        assert env_of(rendered.deployment(component))["GRPC_PORT"] == str(port)
    assert int(config_data(rendered)["GRPC_MAX_CONNECTION_AGE_SECONDS"]) > 0


# Ingress


def test_the_gateway_is_served_over_tls(gpu: Rendered) -> None:
    ingress = gpu.get("Ingress", name_of("gateway"))
    (tls,) = ingress["spec"]["tls"]
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert tls["hosts"] == hosts == ["api.facerestore.example.com"]
    assert tls["secretName"] == "facerestore-tls"
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": name_of("gateway"), "port": {"name": "http"}}
    service = gpu.get("Service", name_of("gateway"))
    assert "http" in {port["name"] for port in service["spec"]["ports"]}


def test_trusted_proxies_come_from_values(gpu: Rendered, dev: Rendered) -> None:
    assert env_of(gpu.deployment("gateway"))["TRUSTED_PROXIES"] == "10.4.0.0/14"
    assert env_of(dev.deployment("gateway"))["TRUSTED_PROXIES"] == "10.244.0.0/16"


def test_image_links_point_at_the_public_address_clients_use(gpu: Rendered, dev: Rendered) -> None:
    # The Ingress's host, https when it has TLS; never what a request's Host header says.
    assert env_of(gpu.deployment("gateway"))["PUBLIC_BASE_URL"] == "https://api.facerestore.example.com"
    assert env_of(dev.deployment("gateway"))["PUBLIC_BASE_URL"] == "http://facerestore.localtest.me"
    explicit = render({**profile_values("gpu"), "gateway": {"publicBaseUrl": "https://photos.example.org"}})
    assert env_of(explicit.deployment("gateway"))["PUBLIC_BASE_URL"] == "https://photos.example.org"
    # Production without an address (no Ingress, none set) is refused, not started with a wrong one.
    with helm_python.Chart.load(CHART_DIR) as chart, pytest.raises(helm_python.HelmError):
        chart.render({**profile_values("gpu"), "ingress": {"enabled": False}}, name=RELEASE, namespace=NAMESPACE)


# Network policies


@dataclass(frozen=True)
class Peer:
    """A pod (namespace, labels, named ports) or an address outside the cluster."""

    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    ip: str = ""


def pods_of(rendered: Rendered) -> dict[str, Peer]:
    pods = {}
    for obj in rendered.pod_objects():
        template = obj["spec"]["template"]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        pods[template["metadata"]["labels"]["app.kubernetes.io/component"]] = Peer(
            NAMESPACE, template["metadata"]["labels"], ports
        )
    return pods


def peer_matches(peer: Mapping[str, Any], policy_namespace: str, other: Peer) -> bool:
    if "ipBlock" in peer:
        if not other.ip:
            return False
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if other.ip:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace})
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and ("podSelector" not in peer or selects(peer["podSelector"], other.labels))


def port_matches(rule_ports: list[Mapping[str, Any]] | None, port: int, protocol: str, destination: Peer) -> bool:
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        value = rule_port.get("port")
        if value is None or value == port or (isinstance(value, str) and destination.ports.get(value) == port):
            return True
    return False


def allowed(policies: list[Manifest], source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether NetworkPolicies let `source` open a connection to `destination`:`port`: the
    source's egress and the destination's ingress must both allow it (pods no policy selects
    for a direction are open in it)."""
    for side, me, other, key, peers_key in (
        ("Egress", source, destination, "egress", "to"),
        ("Ingress", destination, source, "ingress", "from"),
    ):
        if me.ip:
            continue
        selecting = [
            policy
            for policy in policies
            if policy["metadata"]["namespace"] == me.namespace
            and side in policy["spec"]["policyTypes"]
            and selects(policy["spec"]["podSelector"], me.labels)
        ]
        if selecting and not any(
            (not rule.get(peers_key) or any(peer_matches(p, me.namespace, other) for p in rule[peers_key]))
            and port_matches(rule.get("ports"), port, protocol, destination)
            for policy in selecting
            for rule in policy["spec"].get(key) or []
        ):
            return False
    return True


INGRESS_CONTROLLER = Peer("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
KEDA_OPERATOR = Peer("keda", {"app": "keda-operator"})
KUBE_DNS = Peer("kube-system", {"k8s-app": "kube-dns"}, {"dns": 53})
STRANGER = Peer("default", {"app": "curl"})
INTERNET = Peer(ip="93.184.216.34")


def test_the_namespace_denies_by_default(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    deny = rendered.get("NetworkPolicy", f"{RELEASE}-default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # A pod the chart knows nothing about, in the same namespace, is cut off both ways.
    other = Peer(NAMESPACE, {"app": "something-else"}, {"http": 80})
    gateway = pods_of(rendered)["gateway"]
    assert not allowed(policies, other, gateway, 8080)
    assert not allowed(policies, gateway, other, 80)


def test_grpc_services_are_reachable_only_from_their_callers(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    pods = pods_of(rendered)
    sources = {**pods, "ingress-controller": INGRESS_CONTROLLER, "prometheus": PROMETHEUS, "stranger": STRANGER}
    for service, port in GRPC_PORTS.items():
        reached_by = {name for name, source in sources.items() if allowed(policies, source, pods[service], port)}
        assert reached_by == GRPC_CALLERS[service], service


def test_the_gateway_is_reachable_only_from_the_ingress_controller(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    pods = pods_of(rendered)
    sources = {**pods, "ingress-controller": INGRESS_CONTROLLER, "prometheus": PROMETHEUS, "stranger": STRANGER}
    reached_by = {name for name, source in sources.items() if allowed(policies, source, pods["gateway"], 8080)}
    assert reached_by == {"ingress-controller"}


def test_metrics_are_scraped_only_from_the_monitoring_namespace(rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    pods = pods_of(rendered)
    for component in SERVICES:
        assert allowed(policies, PROMETHEUS, pods[component], METRICS_PORT), component
        assert not allowed(policies, STRANGER, pods[component], METRICS_PORT), component
        assert not allowed(policies, INGRESS_CONTROLLER, pods[component], METRICS_PORT), component


def test_egress_is_only_dns_and_the_dependencies(dev: Rendered) -> None:
    policies = dev.of_kind("NetworkPolicy")
    pods = pods_of(dev)
    for component in SERVICES:
        source = pods[component]
        assert allowed(policies, source, KUBE_DNS, 53, "UDP"), component
        assert allowed(policies, source, KUBE_DNS, 53, "TCP"), component
        for dependency, port in DEPENDENCY_PORTS.items():
            expected = component in DEPENDENCY_USERS[dependency]
            assert allowed(policies, source, pods[dependency], port) == expected, f"{component} -> {dependency}"
        # Only auth sends codes out: the SMS provider's API and the mail server.
        for port in (443, 587):
            assert allowed(policies, source, INTERNET, port) == (component == "auth"), f"{component} -> :{port}"
        assert not allowed(policies, source, INTERNET, 80), component
    # Dependencies talk to nobody but DNS.
    for dependency in DEPENDENCY_PORTS:
        assert not allowed(policies, pods[dependency], INTERNET, 443), dependency
        assert not allowed(policies, pods[dependency], pods["gateway"], 8080), dependency


def test_dependencies_are_reachable_only_from_their_users(dev: Rendered) -> None:
    policies = dev.of_kind("NetworkPolicy")
    pods = pods_of(dev)
    sources = {**pods, "keda": KEDA_OPERATOR, "stranger": STRANGER, "ingress-controller": INGRESS_CONTROLLER}
    for dependency, port in DEPENDENCY_PORTS.items():
        reached_by = {name for name, source in sources.items() if allowed(policies, source, pods[dependency], port)}
        # KEDA reads the inference queues' lengths from the broker.
        expected = DEPENDENCY_USERS[dependency] | ({"keda"} if dependency == "rabbitmq" else set())
        assert reached_by == expected, dependency
    assert allowed(policies, PROMETHEUS, pods["rabbitmq"], 15692)


def test_the_services_that_may_reach_redis_are_given_its_address(dev: Rendered) -> None:
    for component in SERVICES:
        given = "REDIS_URL" in env_of(dev.deployment(component))
        assert given == (component in DEPENDENCY_USERS["redis"]), component


def test_external_dependencies_are_reached_at_the_listed_addresses(gpu: Rendered) -> None:
    policies = gpu.of_kind("NetworkPolicy")
    pods = pods_of(gpu)
    mongodb = Peer(ip="10.20.0.7")
    qdrant = Peer("qdrant", {"app.kubernetes.io/name": "qdrant"}, {"http": 6333})
    for component in SERVICES:
        assert allowed(policies, pods[component], mongodb, 27017) == (component in DEPENDENCY_USERS["mongodb"])
        assert allowed(policies, pods[component], qdrant, 6333) == (component == "history"), component
        assert not allowed(policies, pods[component], Peer(ip="10.99.0.1"), 27017), component
    # The signing-key hook reaches the API server and nothing else.
    hook = pods["jwt-keys-hook"]
    assert allowed(policies, hook, Peer(ip="10.96.0.1"), 443)
    assert not allowed(policies, hook, pods["auth"], 50051)


# Metrics


def test_service_monitor_scrapes_every_service(gpu: Rendered) -> None:
    monitor = gpu.get("ServiceMonitor", RELEASE)
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    scraped = {
        service["metadata"]["labels"]["app.kubernetes.io/component"]
        for service in gpu.of_kind("Service")
        if selects(monitor["spec"]["selector"], service["metadata"]["labels"])
        and "metrics" in {port["name"] for port in service["spec"]["ports"]}
    }
    assert scraped == {*SERVICES, "inference-gpu"}  # every worker group too


def test_pod_monitor_scrapes_every_service(cpu: Rendered) -> None:
    monitor = cpu.get("PodMonitor", RELEASE)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    scraped = {
        deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for deployment in cpu.of_kind("Deployment")
        if selects(monitor["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    }
    assert scraped == set(SERVICES)


def test_in_chart_rabbitmq_exposes_its_queue_metrics() -> None:
    rendered = render(merge(profile_values("dev"), {"metrics": {"serviceMonitor": {"enabled": True}}}))
    rabbitmq = rendered.get("StatefulSet", name_of("rabbitmq"))
    ports = {port["name"]: port["containerPort"] for port in container(rabbitmq)["ports"]}
    assert ports["metrics"] == 15692
    plugins = rendered.get("ConfigMap", name_of("rabbitmq"))["data"]["enabled_plugins"]
    assert "rabbitmq_prometheus" in plugins
    (endpoint,) = rendered.get("ServiceMonitor", name_of("rabbitmq"))["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics/detailed"
    assert set(endpoint["params"]["family"]) == {"queue_coarse_metrics", "queue_consumer_count"}


def defined_metric_names() -> str:
    sources = [*ROOT.glob("libs/common/facerestore_common/*.py"), *ROOT.glob("services/*/*_service/**/*.py")]
    return "\n".join(path.read_text(encoding="utf-8") for path in sources)


def test_alerts_cover_dead_letters_lag_errors_and_consumers(gpu: Rendered) -> None:
    rule = gpu.get("PrometheusRule", RELEASE)
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {
        "FacerestoreDeadLetterQueueNotEmpty",
        "FacerestoreQueueLagHigh",
        "FacerestoreHttpErrorRateHigh",
        "FacerestoreGrpcErrorRateHigh",
        "FacerestoreQueueNoConsumers",
    } <= alerts.keys()
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]

    # The dead-letter alert's queue pattern matches every consumer's dead-letter queue.
    expr = alerts["FacerestoreDeadLetterQueueNotEmpty"]["expr"]
    pattern = re.search(r'queue=~"([^"]+)"', expr)
    assert pattern
    dlq = re.compile(pattern.group(1).replace("\\\\", "\\"))
    bus = EventBus("amqp://unused", "facerestore.events", "facerestore", "test")
    for consumer in CONSUMER_BINDINGS:
        name, retry, dead = bus.consumer_queues(consumer)
        assert dlq.fullmatch(dead) and not dlq.fullmatch(name) and not dlq.fullmatch(retry)
    assert "rabbitmq_detailed_queue_consumers" in alerts["FacerestoreQueueNoConsumers"]["expr"]

    # The services' own metrics the alerts read exist in the code.
    code = defined_metric_names()
    for metric, alert in [
        ("inference_queue_lag_seconds", "FacerestoreQueueLagHigh"),
        ("grpc_server_handled_total", "FacerestoreGrpcErrorRateHigh"),
        ("gateway_http_requests_total", "FacerestoreHttpErrorRateHigh"),
    ]:
        assert metric in alerts[alert]["expr"]
        assert f'"{metric.removesuffix("_total")}' in code or f'"{metric}"' in code, metric


def test_monitors_and_alerts_are_off_unless_asked_for(dev: Rendered) -> None:
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"):
        assert dev.of_kind(kind) == [], kind


# Profiles, secrets and the namespace


def test_dev_runs_every_dependency_in_the_namespace(dev: Rendered) -> None:
    for dependency in DEPENDENCY_PORTS:
        statefulset = dev.get("StatefulSet", name_of(dependency))
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"]
        service = dev.get("Service", name_of(dependency))
        assert service["spec"]["clusterIP"] == "None"
        assert DEPENDENCY_PORTS[dependency] in {port["port"] for port in service["spec"]["ports"]}
    data = {key: base64.b64decode(value).decode() for key, value in dev.get("Secret", f"{RELEASE}-env")["data"].items()}
    assert data["MONGO_URL"].startswith(f"mongodb://root:{data['MONGODB_ROOT_PASSWORD']}@{name_of('mongodb')}:27017/")
    assert data["AMQP_URL"] == f"amqp://facerestore:{data['RABBITMQ_PASSWORD']}@{name_of('rabbitmq')}:5672/"
    assert data["REDIS_URL"] == f"redis://:{data['REDIS_PASSWORD']}@{name_of('redis')}:6379/0"
    assert data["S3_ENDPOINT"] == f"{name_of('minio')}:9000"
    for generated in (
        "OTP_HMAC_SECRET",
        "DOWNLOAD_TOKEN_SECRET",
        "PSEUDONYM_SECRET",
        "S3_SECRET_KEY",
        "QDRANT_API_KEY",
    ):
        assert len(data[generated]) >= 32 and not data[generated].startswith("dev-only-"), generated
    assert config_data(dev)["QDRANT_URL"] == f"http://{name_of('qdrant')}:6333"
    assert env_of(dev.deployment("inference-cpu"))["DEVICE"] == "cpu"


@pytest.mark.parametrize("profile_name", CHART_SECRET_PROFILES)
def test_every_secret_key_a_pod_needs_is_in_the_chart_secret(profile_name: str) -> None:
    rendered = rendered_profile(profile_name)
    secret = rendered.get("Secret", f"{RELEASE}-env")
    for obj in rendered.pod_objects():
        for item in obj["spec"]["template"]["spec"]["containers"]:
            for variable in item.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == secret["metadata"]["name"] and not ref.get("optional"):
                    assert ref["key"] in secret["data"], f"{obj['metadata']['name']}: {ref['key']}"


def test_production_profiles_use_external_dependencies(gpu: Rendered, cpu: Rendered) -> None:
    for rendered in (gpu, cpu):
        assert rendered.of_kind("StatefulSet") == []
        assert config_data(rendered)["ENVIRONMENT"] == "production"
        assert config_data(rendered)["QDRANT_URL"] == "http://qdrant.qdrant.svc.cluster.local:6333"
        refs = {
            variable["valueFrom"]["secretKeyRef"]["name"]
            for deployment in rendered.of_kind("Deployment")
            for variable in container(deployment)["env"]
            if "secretKeyRef" in variable.get("valueFrom", {})
        }
        assert refs == {"facerestore-env"}
        assert env_of(rendered.deployment("auth"))["SMS_PROVIDER"] == "twilio"


def test_the_namespace_object_enforces_restricted_pod_security() -> None:
    rendered = render({"namespace": {"create": True}})
    (namespace,) = rendered.of_kind("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert not validation_errors(namespace)


def test_signing_keys_come_from_a_hook_never_from_values(rendered: Rendered) -> None:
    assert "PRIVATE KEY" not in yaml.safe_dump_all(rendered.objects)
    auth = rendered.deployment("auth")
    volumes = {volume["name"]: volume for volume in auth["spec"]["template"]["spec"]["volumes"]}
    secret_name = volumes["jwt-keys"]["secret"]["secretName"]
    job = rendered.get("Job", name_of("jwt-keys-hook"))
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    hook_env = {item["name"]: item["value"] for item in container(job)["env"]}
    assert hook_env["SECRET_NAME"] == secret_name
    (role_rule,) = rendered.get("Role", name_of("jwt-keys-hook"))["rules"]
    assert role_rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}
    assert not any(obj["kind"] == "Secret" and obj["metadata"]["name"] == secret_name for obj in rendered.objects)


def test_the_hook_script_makes_a_key_auth_can_load(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "create_jwt_keys_secret", CHART_DIR / "files" / "create_jwt_keys_secret.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from auth_service.keys import load_key_ring

    manifest = script.secret_manifest("facerestore-jwt-keys", {"a": "b"}, script.new_key_files())
    assert manifest["metadata"] == {"name": "facerestore-jwt-keys", "labels": {"a": "b"}}
    assert not validation_errors(manifest | {"metadata": {**manifest["metadata"], "namespace": NAMESPACE}})
    for file_name, content in manifest["data"].items():
        (tmp_path / file_name).write_bytes(base64.b64decode(content))
    ring = load_key_ring(tmp_path, create_if_empty=False)
    (kid,) = ring.kids
    assert ring.signing_key.kid == kid
    assert json.loads(ring.jwks_json())["keys"][0]["kid"] == kid


def test_notes_tell_the_operator_where_to_go(rendered: Rendered, profile: str) -> None:
    assert RELEASE in rendered.notes
    if rendered.values.get("ingress", {}).get("enabled"):
        assert rendered.values["ingress"]["hosts"][0] in rendered.notes
    else:
        assert "port-forward" in rendered.notes
