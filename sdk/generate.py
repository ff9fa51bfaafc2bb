"""Generates the client SDKs from the platform's OpenAPI document and fails on any generator
warning (a warning means a piece of the API is missing from the SDK).

    python sdk/generate.py                        # from the gateway's document, dumped to build/openapi.json
    python sdk/generate.py --source URL_OR_FILE   # e.g. http://127.0.0.1:8080/openapi.json
    python sdk/generate.py --only typescript      # what the web client's build needs

Python: openapi-python-client (PyPI) -> build/sdk/python/facerestore_client (regenerated every run).
TypeScript: openapi-typescript (npm, installed in web/) -> build/sdk/typescript/schema.d.ts, the types
that openapi-fetch (the web client's HTTP layer) checks every call against; rewritten only when its
content changes, so that the web build is not redone for nothing."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
DOCUMENT = BUILD / "openapi.json"
PYTHON_OUT = BUILD / "sdk" / "python"
TYPESCRIPT_OUT = BUILD / "sdk" / "typescript" / "schema.d.ts"
PYTHON_CONFIG = ROOT / "sdk" / "openapi-python-client.yaml"
PYTHON_PACKAGE = "facerestore_client"
OPENAPI_TYPESCRIPT = ROOT / "web" / "node_modules" / ".bin" / "openapi-typescript"


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
sys.path.insert(0, sys.argv[1])
package = importlib.import_module(sys.argv[2])
for module in pkgutil.walk_packages(package.__path__, sys.argv[2] + "."):
    importlib.import_module(module.name)
"""


class GeneratorWarning(RuntimeError):
    pass


def _source_args(source: str) -> list[str]:
    return ["--url", source] if source.startswith(("http://", "https://")) else ["--path", source]


def _run(command: list[str], name: str) -> subprocess.CompletedProcess[str]:
    # The generator's post hooks (ruff) come from the same virtualenv.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise GeneratorWarning(f"{name} failed ({done.returncode}):\n{output}")
    return done


def _import_unset(package: Path) -> list[Path]:
    """openapi-python-client 0.29.1 types the body of an operation with several request media
    types (POST /v1/search: a photo as multipart or a stored face as JSON) as `... | Unset`
    without importing Unset (upstream issue openapi-generators/openapi-python-client#1451);
    the module then fails to import. Adds the import where it is missing."""
    patched = []
    for module in sorted((package / "api").rglob("*.py")):
        text = module.read_text()
        uses = re.search(r"\|\s*Unset\b", text) is not None
        imports = re.search(r"^from \.\.\.types import .*\bUnset\b", text, flags=re.MULTILINE) is not None
        if uses and not imports:
            module.write_text(
                text.replace(
                    "from ...types import UNSET, Response\n", "from ...types import UNSET, Response, Unset\n", 1
                )
            )
            if "import UNSET, Response, Unset" not in module.read_text():
                raise GeneratorWarning(f"{module}: uses Unset and its import could not be added")
            patched.append(module)
    return patched


def generate_python(source: str, out: Path = PYTHON_OUT) -> Path:
    """The Python client package, in `out`/facerestore_client; returns the folder to put on sys.path."""
    package = out / PYTHON_PACKAGE
    out.mkdir(parents=True, exist_ok=True)
    done = _run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            "generate",
            *_source_args(source),
            "--config",
            str(PYTHON_CONFIG),
            "--output-path",
            str(package),
            "--meta",
            "none",
            "--overwrite",
            "--fail-on-warning",
        ],
        "openapi-python-client",
    )
    output = done.stdout + done.stderr
    if "Warning" in output or "Error" in output:
        raise GeneratorWarning(f"openapi-python-client warned:\n{output}")
    _import_unset(package)
    # Every generated module must at least import (a name the generator forgot fails here, not in an app).
    _run(
        [
            sys.executable,
            "-c",
            IMPORT_EVERY_MODULE,
            str(out),
            PYTHON_PACKAGE,
        ],
        "importing the generated Python client",
    )
    return out


def generate_typescript(source: str, out: Path = TYPESCRIPT_OUT) -> Path:
    """The TypeScript types of every path and schema; `out` is replaced only when they changed."""
    if not OPENAPI_TYPESCRIPT.exists():
        raise GeneratorWarning(f"{OPENAPI_TYPESCRIPT} is missing: run `cd web && npm ci`")
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "schema.d.ts"
        done = _run([str(OPENAPI_TYPESCRIPT), source, "--output", str(fresh)], "openapi-typescript")
        # Its own warnings (the document's lint problems) go to stderr with a warning sign.
        if done.stderr.strip():
            raise GeneratorWarning(f"openapi-typescript warned:\n{done.stderr}")
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists() or out.read_bytes() != fresh.read_bytes():
            shutil.copyfile(fresh, out)
    return out


def dump_document(out: Path = DOCUMENT) -> Path:
    """The gateway's document, as it serves it, without starting it."""
    _run([sys.executable, "-m", "gateway_service.openapi_document", str(out)], "the OpenAPI dump")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="URL or file of the OpenAPI document (default: the gateway's, dumped)")
    parser.add_argument("--only", choices=("python", "typescript"), help="generate one SDK only")
    args = parser.parse_args()
    source = args.source or str(dump_document())
    try:
        if args.only in (None, "python"):
            print("python:", generate_python(source) / PYTHON_PACKAGE)
        if args.only in (None, "typescript"):
            print("typescript:", generate_typescript(source))
    except GeneratorWarning as problem:
        sys.exit(str(problem))


if __name__ == "__main__":
    main()
