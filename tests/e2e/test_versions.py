"""Models, options and versions on the running platform, as a client app uses them. The stack
runs the weight-free classical restorer only (no GFPGAN or CodeFormer weights here), so
GET /v1/models must say exactly that, and asking for another model is 409 `model-unavailable`.
An upload with options, a reprocess that makes a second version (twice the size), both listed
with their quality, the second preferred (the image's links follow it), the upload quota
counting the reprocess but not its retry under the same Idempotency-Key (the same version
again), and deleting the image removing both versions' files."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
from minio import Minio
from PIL import Image

from tests.conftest import face_photo
from tests.e2e.test_walkthrough import bearer, wait_until_settled
from tests.stack_harness import RunningStack, random_mobile

PROBLEM = "https://facerestore.dev/problems/"


def photo() -> bytes:
    """A real face photo (one face, 112 x 112, so a restoration takes a fraction of a second)."""
    image = Image.open(face_photo("Tom_Hanks_54745.png")).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def problem_of(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + reason, body
    return body


def wait_for_version(
    client: httpx.Client, tokens: dict[str, str], image_id: str, restoration_id: str, timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/images/{image_id}", headers=bearer(tokens)).json()
        versions = {version["id"]: version for version in body["restorations"]}
        if versions.get(restoration_id, {}).get("status") in ("done", "failed"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"{image_id} {restoration_id} did not finish within {timeout}s")


def picture_size(client: httpx.Client, url: str) -> tuple[int, int]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    size: tuple[int, int] = Image.open(io.BytesIO(response.content)).size
    return size


def bucket_keys(stack: RunningStack) -> list[str]:
    client = Minio(
        f"127.0.0.1:{stack.ports['S3']}",
        access_key="dev-only-access-key",
        secret_key="dev-only-secret-key",
        secure=False,
        region="us-east-1",
    )
    return [
        item.object_name or ""
        for bucket in client.list_buckets()
        for item in client.list_objects(bucket.name, recursive=True)
    ]


def test_the_model_list_tells_the_truth_about_this_stack(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())

    response = client.get("/v1/models", headers=bearer(tokens))

    assert response.status_code == 200, response.text
    body = response.json()
    models = {model["name"]: model for model in body["models"]}
    assert list(models) == ["gfpgan", "codeformer", "classical"]
    # No weights on this machine: only the classical restorer runs.
    assert (models["gfpgan"]["available"], models["codeformer"]["available"]) == (False, False)
    assert models["classical"]["available"] is True
    assert models["classical"]["model_id"]
    assert models["classical"]["sha256"] is None
    assert models["classical"]["supports_fidelity"] is False
    assert body["auto"] == "classical"


def test_a_model_no_worker_runs_is_refused_naming_it_and_costs_nothing(
    stack: RunningStack, client: httpx.Client
) -> None:
    tokens = stack.sign_in(client, random_mobile())
    files = {"file": ("face.jpg", photo(), "image/jpeg")}

    codeformer = client.post("/v1/images", headers=bearer(tokens), files=files, data={"model": "codeformer"})
    gfpgan = client.post("/v1/images", headers=bearer(tokens), files=files, data={"model": "gfpgan"})
    fidelity = client.post("/v1/images", headers=bearer(tokens), files=files, data={"fidelity": "0.5"})

    assert problem_of(codeformer, 409, "model-unavailable")["model"] == "codeformer"
    assert problem_of(gfpgan, 409, "model-unavailable")["model"] == "gfpgan"
    # auto picks classical, which has no fidelity dial.
    assert problem_of(fidelity, 422, "option-unsupported")["model"] == "classical"
    limit = int(codeformer.headers["ratelimit-limit"])
    assert all(int(response.headers["ratelimit-remaining"]) == limit for response in (codeformer, gfpgan, fidelity))
    assert client.get("/v1/images", headers=bearer(tokens)).json()["items"] == []


def test_a_reprocess_makes_a_second_version_both_are_listed_with_quality_and_the_second_can_be_preferred(
    stack: RunningStack, client: httpx.Client
) -> None:
    tokens = stack.sign_in(client, random_mobile())
    stranger = stack.sign_in(client, random_mobile())

    accepted = client.post(
        "/v1/images",
        headers=bearer(tokens),
        files={"file": ("face.jpg", photo(), "image/jpeg")},
        data={"model": "classical", "faces": "0", "upscale": "1"},
    )
    assert accepted.status_code == 202, accepted.text
    created = accepted.json()
    image_id = created["id"]
    assert created["preferred_restoration"] == "r1"
    assert created["restorations"][0]["options"] == {"model": "classical", "fidelity": None, "faces": [0], "upscale": 1}
    remaining_after_upload = int(accepted.headers["ratelimit-remaining"])

    first = wait_until_settled(client, tokens, image_id)
    assert first["status"] == "done", first
    assert len(first["detected_faces"]) == 1, first
    [face] = first["detected_faces"]
    x0, y0, x1, y1 = face["box"]
    # The detector's box, which may reach past the edge of a tightly cropped face.
    assert x0 < x1 and y0 < y1
    assert x0 < first["width"] and y0 < first["height"] and x1 > 0 and y1 > 0
    assert face["detection_score"] > 0 and face["index"] == 0

    # Someone else cannot reprocess it; the owner can, and that counts as an upload.
    problem_of(client.post(f"/v1/images/{image_id}/restorations", headers=bearer(stranger), json={}), 404, "not-found")
    problem_of(
        client.post(f"/v1/images/{image_id}/restorations", headers=bearer(tokens), json={"model": "codeformer"}),
        409,
        "model-unavailable",
    )
    keyed = {**bearer(tokens), "Idempotency-Key": "reprocess-5c1e"}
    again = client.post(f"/v1/images/{image_id}/restorations", headers=keyed, json={"model": "classical", "upscale": 2})
    assert again.status_code == 202, again.text
    second_asked = again.json()
    assert (second_asked["id"], second_asked["status"]) == ("r2", "queued")
    assert second_asked["options"] == {"model": "classical", "fidelity": None, "faces": [], "upscale": 2}
    assert int(again.headers["ratelimit-remaining"]) == remaining_after_upload - 1
    # A client that timed out retries with the same key: the same version again, and no quota spent.
    retried = client.post(
        f"/v1/images/{image_id}/restorations", headers=keyed, json={"model": "classical", "upscale": 2}
    )
    assert retried.status_code == 202, retried.text
    assert retried.json() == second_asked
    assert int(retried.headers["ratelimit-remaining"]) == remaining_after_upload - 1
    reused = client.post(f"/v1/images/{image_id}/restorations", headers=keyed, json={"model": "classical"})
    problem_of(reused, 422, "idempotency-key-reused")
    assert int(reused.headers["ratelimit-remaining"]) == remaining_after_upload - 1

    wait_for_version(client, tokens, image_id, "r2")
    [listed] = [
        item for item in client.get("/v1/images", headers=bearer(tokens)).json()["items"] if item["id"] == image_id
    ]
    first_version, second_version = listed["restorations"]
    assert (first_version["id"], second_version["id"]) == ("r1", "r2")
    for version in (first_version, second_version):
        assert version["status"] == "done", version
        assert version["restorer_model"]
        assert version["quality"]["sharpness_gain"] > 0
        assert 0 < version["quality"]["identity_mean"] <= 1.0001
        assert version["restored_url"] and version["thumbnail_url"]
    # The second version is twice the original's size; the image still shows the first.
    width, height = listed["width"], listed["height"]
    assert picture_size(client, first_version["restored_url"]) == (width, height)
    assert picture_size(client, second_version["restored_url"]) == (2 * width, 2 * height)
    assert listed["preferred_restoration"] == "r1"
    assert picture_size(client, listed["restored_url"]) == (width, height)

    problem_of(
        client.patch(f"/v1/images/{image_id}", headers=bearer(tokens), json={"preferred_restoration": "r7"}),
        404,
        "restoration-not-found",
    )
    preferred = client.patch(f"/v1/images/{image_id}", headers=bearer(tokens), json={"preferred_restoration": "r2"})
    assert preferred.status_code == 200, preferred.text
    shown = preferred.json()
    assert shown["preferred_restoration"] == "r2"
    assert shown["quality"] == second_version["quality"]
    assert picture_size(client, shown["restored_url"]) == (2 * width, 2 * height)
    assert client.get(f"/v1/images/{image_id}", headers=bearer(tokens)).json()["preferred_restoration"] == "r2"

    # Deleting the image removes both versions' files.
    keys = [key for key in bucket_keys(stack) if image_id in key]
    assert any("r2" in key for key in keys), keys
    assert client.delete(f"/v1/images/{image_id}", headers=bearer(tokens)).status_code == 204
    deadline = time.monotonic() + 30
    while [key for key in bucket_keys(stack) if image_id in key] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [key for key in bucket_keys(stack) if image_id in key] == []
