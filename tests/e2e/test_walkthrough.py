"""A real face photo through the whole platform, as a client app would drive it:
code from the SMS outbox -> tokens -> upload -> restored -> history -> download -> delete."""

from __future__ import annotations

import io
import time

import httpx
from PIL import Image

from tests.conftest import face_photo
from tests.stack_harness import RunningStack, random_mobile

PROBLEM_JSON = "application/problem+json"


def bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def upload(
    client: httpx.Client, tokens: dict[str, str], content: bytes, name: str = "face.jpg", **fields: str
) -> httpx.Response:
    return client.post("/v1/images", headers=bearer(tokens), files={"file": (name, content, "image/jpeg")}, data=fields)


def wait_until_settled(client: httpx.Client, tokens: dict[str, str], image_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    # A 202 means stored and announced; the history shows the image once it has read the
    # announcement, milliseconds later (more when the machine is busy): 404 until then.
    shown_by = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = client.get(f"/v1/images/{image_id}", headers=bearer(tokens))
        if response.status_code == 404 and time.monotonic() < shown_by:
            time.sleep(0.05)
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"image {image_id} did not finish within {timeout}s")


def test_face_photo_travels_the_whole_path(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] > 0

    me = client.get("/v1/me", headers=bearer(tokens)).json()
    assert me["role"] == "user"

    photo = face_photo("t1.jpg").read_bytes()
    original = Image.open(io.BytesIO(photo))
    response = upload(client, tokens, photo, tags="family, beach", note="grandma", location="Lisbon")
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["tags"] == ["family", "beach"]
    image_id = accepted["id"]

    item = wait_until_settled(client, tokens, image_id)
    assert item["status"] == "done", item
    assert item["faces"] >= 4  # t1.jpg shows six people
    assert item["quality"]["backend"] == "classical"
    assert item["quality"]["sharpness_after"] > item["quality"]["sharpness_before"]
    assert (item["tags"], item["note"], item["location"]) == (["family", "beach"], "grandma", "Lisbon")

    restored = client.get(item["restored_url"])
    assert restored.status_code == 200
    assert restored.headers["content-type"] == "image/jpeg"
    restored_image = Image.open(io.BytesIO(restored.content))
    restored_image.load()
    assert restored_image.size == original.size
    assert restored.content != client.get(item["original_url"]).content

    thumbnail = Image.open(io.BytesIO(client.get(item["thumbnail_url"]).content))
    assert max(thumbnail.size) == 256

    listing = client.get("/v1/images", headers=bearer(tokens)).json()
    assert [entry["id"] for entry in listing["items"]] == [image_id]
    assert listing["next_cursor"] is None

    assert client.delete(f"/v1/images/{image_id}", headers=bearer(tokens)).status_code == 204
    assert client.get(f"/v1/images/{image_id}", headers=bearer(tokens)).status_code == 404
    assert client.get(item["restored_url"]).status_code == 404
    assert client.get(item["original_url"]).status_code == 404
    assert client.get("/v1/images", headers=bearer(tokens)).json()["items"] == []
    assert client.delete(f"/v1/images/{image_id}", headers=bearer(tokens)).status_code == 404


def test_history_pages_newest_first(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    photo = face_photo("Tom_Hanks_54745.png").read_bytes()
    ids = []
    for _ in range(3):
        response = client.post("/v1/images", headers=bearer(tokens), files={"file": ("f.png", photo, "image/png")})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    for image_id in ids:
        wait_until_settled(client, tokens, image_id)
    first = client.get("/v1/images", params={"limit": 2}, headers=bearer(tokens)).json()
    assert [entry["id"] for entry in first["items"]] == ids[::-1][:2]
    second = client.get(
        "/v1/images", params={"limit": 2, "cursor": first["next_cursor"]}, headers=bearer(tokens)
    ).json()
    assert [entry["id"] for entry in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None


def test_a_user_cannot_read_or_delete_another_users_image(stack: RunningStack, client: httpx.Client) -> None:
    owner = stack.sign_in(client, random_mobile())
    other = stack.sign_in(client, random_mobile())
    response = upload(client, owner, face_photo("t1.jpg").read_bytes())
    image_id = response.json()["id"]
    wait_until_settled(client, owner, image_id)

    assert client.get(f"/v1/images/{image_id}", headers=bearer(other)).status_code == 404
    refused = client.delete(f"/v1/images/{image_id}", headers=bearer(other))
    assert refused.status_code == 404
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert image_id not in [entry["id"] for entry in client.get("/v1/images", headers=bearer(other)).json()["items"]]
    assert client.get(f"/v1/images/{image_id}", headers=bearer(owner)).json()["status"] == "done"


def test_admin_sees_everyone_and_moderates(stack: RunningStack, client: httpx.Client) -> None:
    user = stack.sign_in(client, random_mobile())
    admin_phone = stack.admin_sign_in_phone()
    admin = stack.sign_in(client, admin_phone)
    assert client.get("/v1/me", headers=bearer(admin)).json()["role"] == "admin"

    image_id = upload(client, user, face_photo("t1.jpg").read_bytes()).json()["id"]
    item = wait_until_settled(client, user, image_id)

    for path in ("/v1/admin/users", "/v1/admin/images", "/v1/admin/stats"):
        refused = client.get(path, headers=bearer(user))
        assert refused.status_code == 403, path
        assert refused.json()["type"].endswith("/forbidden")
    assert client.delete(f"/v1/admin/images/{image_id}", headers=bearer(user)).status_code == 403

    first_page = client.get("/v1/admin/users", params={"limit": 2}, headers=bearer(admin)).json()
    assert len(first_page["items"]) == 2 and first_page["next_cursor"]
    # Found by number in whatever format an admin types it, not by paging through everyone.
    spaced = f"{admin_phone[:3]} {admin_phone[3:6]} {admin_phone[6:]}"
    found = client.get("/v1/admin/users", params={"phone": spaced}, headers=bearer(admin)).json()
    assert [(entry["phone"], entry["role"]) for entry in found["items"]] == [(admin_phone, "admin")]
    assert found["next_cursor"] is None
    nobody = client.get("/v1/admin/users", params={"phone": random_mobile()}, headers=bearer(admin)).json()
    assert nobody["items"] == []
    not_a_number = client.get("/v1/admin/users", params={"phone": "12ab"}, headers=bearer(admin))
    assert not_a_number.status_code == 422 and not_a_number.json()["type"].endswith("/invalid-phone")
    images = client.get("/v1/admin/images", params={"limit": 100}, headers=bearer(admin)).json()["items"]
    assert image_id in [entry["id"] for entry in images]
    stats_before = client.get("/v1/admin/stats", headers=bearer(admin)).json()
    assert stats_before["users"] >= 2 and stats_before["admins"] >= 1
    assert stats_before["images_by_status"].get("done", 0) >= 1

    assert (
        client.delete(f"/v1/admin/images/{image_id}", params={"reason": "test"}, headers=bearer(admin)).status_code
        == 204
    )
    assert client.get(f"/v1/images/{image_id}", headers=bearer(user)).status_code == 404
    assert client.get(item["restored_url"]).status_code == 404
    stats_after = client.get("/v1/admin/stats", headers=bearer(admin)).json()
    assert stats_after["moderation_actions"] == stats_before["moderation_actions"] + 1
    assert stats_after["images_total"] == stats_before["images_total"] - 1


def test_bad_uploads_are_refused_with_problem_details(stack: RunningStack, client: httpx.Client) -> None:
    tokens = stack.sign_in(client, random_mobile())
    cases = {
        415: ("notes.txt", b"just some text, not an image" * 10),
        413: ("big.jpg", b"\xff\xd8\xff" + b"\0" * (1024 * 1024)),
        422: ("broken.jpg", face_photo("t1.jpg").read_bytes()[:2000]),
    }
    for status, (name, content) in cases.items():
        response = upload(client, tokens, content, name=name)
        assert response.status_code == status, (status, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        body = response.json()
        assert body["status"] == status and body["type"].startswith("https://") and body["detail"]
    assert client.post("/v1/images", files={"file": ("f.jpg", b"x", "image/jpeg")}).status_code == 401


def test_sign_in_errors_and_token_lifecycle(stack: RunningStack, client: httpx.Client) -> None:
    assert client.post("/v1/auth/otp", json={"phone": "not a phone"}).status_code == 422
    assert client.post("/v1/auth/otp", json={"phone": "+442071234567"}).status_code == 422  # a landline

    phone = random_mobile()
    assert client.post("/v1/auth/otp", json={"phone": phone}).status_code == 202
    code = stack.latest_code(phone)
    wrong = "000000" if code != "000000" else "111111"
    refused = client.post("/v1/auth/otp/verify", json={"phone": phone, "code": wrong})
    assert refused.status_code == 401 and refused.headers["content-type"] == PROBLEM_JSON
    tokens = client.post("/v1/auth/otp/verify", json={"phone": phone, "code": code}).json()
    assert client.post("/v1/auth/otp/verify", json={"phone": phone, "code": code}).status_code == 401  # used

    renewed = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert renewed.status_code == 200
    assert client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    # Reusing a rotated token ended the session, so its successor is dead too.
    assert client.post("/v1/auth/refresh", json={"refresh_token": renewed.json()["refresh_token"]}).status_code == 401

    fresh = stack.sign_in(client, phone)
    assert client.post("/v1/auth/logout", headers=bearer(fresh)).status_code == 204
    assert client.post("/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}).status_code == 401

    assert client.get("/v1/me").status_code == 401
    assert client.get("/v1/me", headers={"Authorization": "Bearer not.a.token"}).status_code == 401


def test_api_is_documented(stack: RunningStack, client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/auth/otp",
        "/v1/auth/otp/verify",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/me",
        "/v1/images",
        "/v1/images/{image_id}",
        "/v1/admin/users",
        "/v1/admin/images",
        "/v1/admin/images/{image_id}",
        "/v1/admin/stats",
    ):
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and all(ready["checks"].values())
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert keys and all(key["kty"] == "RSA" and "d" not in key for key in keys)
