"""Create the Secret of auth's signing keys with one new RSA key, unless it exists.

Run by the chart's pre-install/pre-upgrade hook Job in the auth image (which has
auth_service.keys), with the Job's service account, which may create Secrets in the
release's namespace and nothing else. An existing Secret is left as it is: keys are added
by rotation (README.md), never replaced by an upgrade.

Environment: SECRET_NAME (required), SECRET_LABELS (JSON object, optional); the API server
comes from the in-cluster service account (KUBERNETES_SERVICE_HOST/PORT, token, CA, namespace).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from auth_service.keys import generate_key

ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def secret_manifest(name: str, labels: dict[str, str], files: dict[str, bytes]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "type": "Opaque",
        "data": {file_name: base64.b64encode(content).decode() for file_name, content in files.items()},
    }


def new_key_files() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as directory:
        key = generate_key(Path(directory))
        return {f"{key.kid}.pem": (Path(directory) / f"{key.kid}.pem").read_bytes()}


def main() -> int:
    name = os.environ["SECRET_NAME"]
    labels = json.loads(os.environ.get("SECRET_LABELS") or "{}")
    namespace = (ACCOUNT / "namespace").read_text().strip()
    token = (ACCOUNT / "token").read_text().strip()
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/secrets"
    body = json.dumps(secret_manifest(name, labels, new_key_files())).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=str(ACCOUNT / "ca.crt"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=30):  # noqa: S310
            print(f"created Secret {namespace}/{name} with one signing key")
    except urllib.error.HTTPError as error:
        if error.code != 409:
            print(f"creating Secret {namespace}/{name} failed: {error.code} {error.read()!r}", file=sys.stderr)
            return 1
        print(f"Secret {namespace}/{name} exists: left as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main())
