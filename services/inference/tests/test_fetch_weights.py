"""The init step that puts pinned weights in MODEL_DIR, run as the init container runs it
(`python -m inference_service.fetch_weights`) against the S3 stand-in."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from facerestore_common.settings import StorageSettings
from inference_service.fetch_weights import WeightsRefused, parse_pins

# Bigger than one download chunk (1 MiB), so hashing across chunks is exercised.
WEIGHTS = random.Random(7).randbytes(3 * (1 << 20) + 123)
DETECTOR = random.Random(8).randbytes(70_000)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bucket:
    client: Minio
    name: str
    endpoint: str

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(self.name, key, io.BytesIO(data), len(data))

    def remove(self, key: str) -> None:
        self.client.remove_object(self.name, key)


@pytest.fixture
def bucket(s3_endpoint: str, unique_name: str) -> Iterator[Bucket]:
    defaults = StorageSettings()
    client = Minio(
        s3_endpoint,
        access_key=defaults.s3_access_key.get_secret_value(),
        secret_key=defaults.s3_secret_key.get_secret_value(),
        secure=False,
        region=defaults.s3_region,
    )
    name = f"models-{unique_name}"
    client.make_bucket(name)
    yield Bucket(client, name, s3_endpoint)
    for item in client.list_objects(name, recursive=True):
        client.remove_object(name, item.object_name)
    client.remove_bucket(name)


def fetch(bucket: Bucket, model_dir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "S3_ENDPOINT": bucket.endpoint,
        "MODELS_BUCKET": bucket.name,
        "MODEL_DIR": str(model_dir),
        **{key.upper(): value for key, value in settings.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "inference_service.fetch_weights"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def outcomes(stdout: str) -> list[str]:
    """Each file's outcome, from the JSON log lines the step wrote."""
    return [line["outcome"] for line in map(json.loads, stdout.splitlines()) if "outcome" in line]


def test_pinned_files_are_fetched_into_the_model_dir(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("v3/GFPGANv1.4.pth", WEIGHTS)
    bucket.put("v3/models/buffalo_l/det_10g.onnx", DETECTOR)
    pins = (
        f"{sha256(WEIGHTS)}  GFPGANv1.4.pth\n"
        "# the detector of the insightface pack\n"
        f"{sha256(DETECTOR)}  models/buffalo_l/det_10g.onnx\n"
    )

    model_dir = tmp_path / "weights"

    result = fetch(bucket, model_dir, model_sha256sums=pins, models_prefix="v3/")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (model_dir / "GFPGANv1.4.pth").read_bytes() == WEIGHTS
    assert (model_dir / "models" / "buffalo_l" / "det_10g.onnx").read_bytes() == DETECTOR
    assert stat.S_IMODE((model_dir / "GFPGANv1.4.pth").stat().st_mode) == 0o444
    assert outcomes(result.stdout) == ["fetched", "fetched"]
    left = sorted(str(path.relative_to(model_dir)) for path in model_dir.rglob("*") if path.is_file())
    assert left == ["GFPGANv1.4.pth", "models/buffalo_l/det_10g.onnx"], "no partial download is left"


def test_a_file_whose_digest_differs_from_its_pin_is_refused(bucket: Bucket, tmp_path: Path) -> None:
    tampered = WEIGHTS[:-1] + b"\x00"
    bucket.put("GFPGANv1.4.pth", tampered)

    result = fetch(bucket, tmp_path, model_sha256sums=f"{sha256(WEIGHTS)}  GFPGANv1.4.pth")

    assert result.returncode == 1
    assert f"sha256 mismatch for s3://{bucket.name}/GFPGANv1.4.pth" in result.stdout
    assert f"pinned {sha256(WEIGHTS)}, got {sha256(tampered)}" in result.stdout
    assert list(tmp_path.iterdir()) == [], "neither the file nor a partial download is left"


def test_a_missing_object_is_named(bucket: Bucket, tmp_path: Path) -> None:
    result = fetch(bucket, tmp_path, model_sha256sums=f"{sha256(WEIGHTS)}  GFPGANv1.4.pth")

    assert result.returncode == 1
    assert f"s3://{bucket.name}/GFPGANv1.4.pth does not exist" in result.stdout


def test_a_file_in_place_with_its_pinned_digest_is_kept_and_any_other_replaced(bucket: Bucket, tmp_path: Path) -> None:
    (tmp_path / "GFPGANv1.4.pth").write_bytes(WEIGHTS)
    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    (tmp_path / "models" / "buffalo_l" / "det_10g.onnx").write_bytes(b"an older detector")
    bucket.put("models/buffalo_l/det_10g.onnx", DETECTOR)  # GFPGANv1.4.pth is not in the bucket at all
    pins = f"{sha256(WEIGHTS)}  GFPGANv1.4.pth\n{sha256(DETECTOR)}  models/buffalo_l/det_10g.onnx\n"

    result = fetch(bucket, tmp_path, model_sha256sums=pins)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "GFPGANv1.4.pth").read_bytes() == WEIGHTS
    assert (tmp_path / "models" / "buffalo_l" / "det_10g.onnx").read_bytes() == DETECTOR
    assert sorted(outcomes(result.stdout)) == ["fetched", "kept"]


def test_pins_come_from_a_manifest_that_sha256sum_wrote(bucket: Bucket, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "models" / "buffalo_l").mkdir(parents=True)
    (source / "GFPGANv1.4.pth").write_bytes(WEIGHTS)
    (source / "models" / "buffalo_l" / "det_10g.onnx").write_bytes(DETECTOR)
    sha256sum = shutil.which("sha256sum")
    assert sha256sum, "coreutils' sha256sum is missing"
    listing = subprocess.run(
        [sha256sum, "--binary", "GFPGANv1.4.pth", "models/buffalo_l/det_10g.onnx"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text(listing)
    bucket.put("GFPGANv1.4.pth", WEIGHTS)
    bucket.put("models/buffalo_l/det_10g.onnx", DETECTOR)

    result = fetch(bucket, tmp_path / "weights", model_manifest=str(manifest))

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "weights" / "GFPGANv1.4.pth").read_bytes() == WEIGHTS
    assert (tmp_path / "weights" / "models" / "buffalo_l" / "det_10g.onnx").read_bytes() == DETECTOR


def test_nothing_pinned_is_refused(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("GFPGANv1.4.pth", WEIGHTS)

    result = fetch(bucket, tmp_path)

    assert result.returncode == 1
    assert "no weights are pinned" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("listing", "reason"),
    [
        (f"{'a' * 64}  ../etc/passwd", "must be a path inside MODEL_DIR"),
        (f"{'a' * 64}  /etc/passwd", "must be a path inside MODEL_DIR"),
        (f"{'a' * 63}  GFPGANv1.4.pth", "is not `<sha256>  <path>`"),
        (f"{'a' * 64}  x.pth\n{'b' * 64}  x.pth", "x.pth is pinned twice"),
    ],
)
def test_pin_lists_that_could_misplace_a_file_are_refused(listing: str, reason: str) -> None:
    with pytest.raises(WeightsRefused, match=reason.replace("(", r"\(")):
        parse_pins(listing)


def test_pins_are_case_insensitive_and_skip_comments() -> None:
    (pin,) = parse_pins(f"# weights v3\n\n{'AB' * 32} *GFPGANv1.4.pth\n")
    assert str(pin.path) == "GFPGANv1.4.pth"
    assert pin.sha256 == "ab" * 32
