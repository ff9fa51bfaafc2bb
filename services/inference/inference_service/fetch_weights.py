"""`python -m inference_service.fetch_weights`: put the model weights in MODEL_DIR before
the worker starts (a Kubernetes init container), from the `models` bucket, every file
checked against a pinned SHA-256.

The pins are a sha256sum listing, `<sha256>  <path>` per line (what `sha256sum` prints),
with paths relative to MODEL_DIR and to MODELS_PREFIX in the bucket, taken from
MODEL_SHA256SUMS or from the file MODEL_MANIFEST. A file already in MODEL_DIR with its
pinned digest is kept. Any other is downloaded beside its destination, hashed as it
streams, and moved into place only when the digest matches. A missing object, a digest
that differs or an empty pin list stops with a message naming the file and exit status 1,
so the worker never starts on weights nobody pinned.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog
from minio import Minio
from minio.error import S3Error

from facerestore_common.logging import configure_logging
from facerestore_common.settings import ServiceSettings, StorageSettings

CHUNK_BYTES = 1 << 20
_PIN_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")

log = structlog.get_logger()


class FetchWeightsSettings(ServiceSettings, StorageSettings):
    service_name: str = "inference-fetch-weights"
    model_dir: str = "var/models"
    models_bucket: str = "models"
    # Key prefix of the weights in the bucket, e.g. "v3/" (keys are this plus the pinned paths).
    models_prefix: str = ""
    # The pins as sha256sum prints them; MODEL_MANIFEST names a file holding the same.
    model_sha256sums: str = ""
    model_manifest: str = ""


class WeightsRefused(Exception):
    """The weights cannot be put in place as pinned; the message names the file."""


@dataclass(frozen=True)
class Pin:
    path: PurePosixPath
    sha256: str


def parse_pins(text: str) -> list[Pin]:
    """Pins from a sha256sum listing; blank lines and `#` comments are skipped."""
    pins: list[Pin] = []
    seen: set[PurePosixPath] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN_LINE.fullmatch(line)
        if match is None:
            raise WeightsRefused(f"pin line {number} is not `<sha256>  <path>`: {line!r}")
        path = PurePosixPath(match.group(2).strip())
        if path.is_absolute() or ".." in path.parts or path == PurePosixPath("."):
            raise WeightsRefused(f"pin line {number}: {path} must be a path inside MODEL_DIR")
        if path in seen:
            raise WeightsRefused(f"pin line {number}: {path} is pinned twice")
        seen.add(path)
        pins.append(Pin(path=path, sha256=match.group(1).lower()))
    return pins


def load_pins(settings: FetchWeightsSettings) -> list[Pin]:
    if settings.model_sha256sums.strip() and settings.model_manifest:
        raise WeightsRefused("set MODEL_SHA256SUMS or MODEL_MANIFEST, not both")
    text = settings.model_sha256sums
    if settings.model_manifest:
        manifest = Path(settings.model_manifest)
        try:
            text = manifest.read_text(encoding="utf-8")
        except OSError as error:
            raise WeightsRefused(f"MODEL_MANIFEST {manifest} cannot be read: {error}") from error
    pins = parse_pins(text)
    if not pins:
        raise WeightsRefused("no weights are pinned: MODEL_SHA256SUMS or MODEL_MANIFEST must list them")
    return pins


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class WeightsFetcher:
    def __init__(self, client: Minio, bucket: str, prefix: str, model_dir: Path) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._model_dir = model_dir

    def put_in_place(self, pin: Pin) -> str:
        """Make MODEL_DIR/<path> the pinned file; returns "kept" or "fetched"."""
        destination = self._model_dir / Path(pin.path)
        if destination.is_file():
            if file_sha256(destination) == pin.sha256:
                return "kept"
            destination.unlink()  # not what was pinned: never left for the worker
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.part")
        try:
            actual = self._download(f"{self._prefix}{pin.path}", partial)
            if actual != pin.sha256:
                raise WeightsRefused(
                    f"sha256 mismatch for s3://{self._bucket}/{self._prefix}{pin.path}: "
                    f"pinned {pin.sha256}, got {actual}"
                )
            partial.chmod(0o444)
            os.replace(partial, destination)
        finally:
            partial.unlink(missing_ok=True)
        return "fetched"

    def _download(self, key: str, target: Path) -> str:
        try:
            response = self._client.get_object(self._bucket, key)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                raise WeightsRefused(f"s3://{self._bucket}/{key} does not exist ({error.code})") from error
            raise
        digest = hashlib.sha256()
        try:
            with target.open("wb") as stream:
                for chunk in response.stream(CHUNK_BYTES):
                    digest.update(chunk)
                    stream.write(chunk)
        finally:
            response.close()
            response.release_conn()
        return digest.hexdigest()


def run(settings: FetchWeightsSettings) -> int:
    try:
        pins = load_pins(settings)
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        fetcher = WeightsFetcher(client, settings.models_bucket, settings.models_prefix, Path(settings.model_dir))
        for pin in pins:
            outcome = fetcher.put_in_place(pin)
            log.info("weights_ready", file=str(pin.path), sha256=pin.sha256, outcome=outcome)
    except WeightsRefused as error:
        log.error("weights_refused", reason=str(error), model_dir=settings.model_dir)
        return 1
    return 0


def main() -> int:
    settings = FetchWeightsSettings()
    configure_logging(settings.service_name, settings.log_level)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
