"""What admins read, proven on a stack of its own (so that every number is this script's): after
a scripted sequence of sign-ins (one wrong code), uploads (one whose stored original is lost, so
its restoration fails; one over the upload limit), a second version of one image, a search,
feedback, a report, a moderation and the deletion of the image with two versions, GET
/v1/admin/stats shows exactly those numbers, by hour and by day (the second version a restoration
requested, not an upload; the bytes freed those the bucket lost), and the model figures equal
those recomputed from the images' and versions' own quality data; each user's activity lists what they did;
the audit log lists the moderation with its reason; the owner sees the hidden image under review;
and a user gets 403 from every admin route the API documents."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import face_photo
from tests.e2e.test_versions import wait_for_version
from tests.e2e.test_walkthrough import bearer, wait_until_settled
from tests.stack_harness import RunningStack, random_mobile

BUCKET = "facerestore-images"
HOUR = 3600


@pytest.fixture(scope="module")
def ops_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(
        var_dir=tmp_path_factory.mktemp("ops-stack"),
        stack_id=uuid.uuid4().hex,
        admin_phone=random_mobile(),
        extra_env={
            "RATE_LIMIT_UPLOADS_PER_USER": "3/hour",
            # One restoration at a time, in order: the upload whose original goes missing waits
            # behind two slow ones, long enough for the test to remove the original first.
            "CONSUMER_PREFETCH": "1",
            "ACTIVITY_FLUSH_SECONDS": "0.5",
        },
    )
    running.start()
    yield running
    code = running.stop()
    running.remove_shared_state()
    assert code == 0, running.logs_tail()


@pytest.fixture(scope="module")
def http(ops_stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ops_stack.base_url, timeout=30) as client:
        yield client


def post_image(client: httpx.Client, tokens: dict[str, str], photo: str) -> httpx.Response:
    content = face_photo(photo).read_bytes()
    kind = "image/png" if photo.endswith(".png") else "image/jpeg"
    return client.post("/v1/images", headers=bearer(tokens), files={"file": (photo, content, kind)})


def bucket_bytes(stack: RunningStack) -> int:
    root = stack.var_dir / "s3" / BUCKET
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def eventually(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """check() once it returns without an AssertionError, retried until the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stats(client: httpx.Client, admin: dict[str, str], **params: str) -> dict[str, Any]:
    response = client.get("/v1/admin/stats", params=params, headers=bearer(admin))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_statistics_activity_audit_and_moderation_show_exactly_what_happened(
    ops_stack: RunningStack, http: httpx.Client
) -> None:
    started = time.time()
    admin = ops_stack.sign_in(http, ops_stack.admin_sign_in_phone())
    alice_phone, bob_phone, carol_phone = random_mobile(), random_mobile(), random_mobile()
    # Alice types a wrong code first.
    assert http.post("/v1/auth/otp", json={"phone": alice_phone}).status_code == 202
    code = ops_stack.latest_code(alice_phone)
    wrong = "000000" if code != "000000" else "111111"
    assert http.post("/v1/auth/otp/verify", json={"phone": alice_phone, "code": wrong}).status_code == 401
    alice = http.post("/v1/auth/otp/verify", json={"phone": alice_phone, "code": code}).json()
    bob = ops_stack.sign_in(http, bob_phone)
    carol = ops_stack.sign_in(http, carol_phone)
    alice = ops_stack.sign_in(http, alice_phone)  # a second sign-in: no second sign-up
    ids = {
        name: http.get("/v1/me", headers=bearer(tokens)).json()["id"]
        for name, tokens in (("admin", admin), ("alice", alice), ("bob", bob), ("carol", carol))
    }

    # Uploads: two slow ones ahead of Carol's second, whose stored original the test removes.
    uploads = {
        "alice-1": post_image(http, alice, "Tom_Hanks_54745.png"),
        "alice-2": post_image(http, alice, "Tom_Hanks_54745.png"),
        "bob-1": post_image(http, bob, "t1.jpg"),
        "carol-1": post_image(http, carol, "t1.jpg"),
        "carol-lost": post_image(http, carol, "Tom_Hanks_54745.png"),
    }
    assert {name: response.status_code for name, response in uploads.items()} == dict.fromkeys(uploads, 202)
    image = {name: response.json()["id"] for name, response in uploads.items()}
    (lost,) = (ops_stack.var_dir / "s3" / BUCKET / "originals").glob(f"{image['carol-lost']}.*")
    lost_bytes = lost.stat().st_size
    lost.unlink()
    uploads["carol-2"] = post_image(http, carol, "Tom_Hanks_54745.png")
    image["carol-2"] = uploads["carol-2"].json()["id"]
    refused = post_image(http, carol, "Tom_Hanks_54745.png")  # the fourth within the hour
    assert refused.status_code == 429 and refused.json()["limit"] == "uploads-per-user"
    assert (
        http.post(  # refused before it is an upload: not counted as one
            "/v1/images", headers=bearer(bob), files={"file": ("notes.txt", b"not an image" * 20, "text/plain")}
        ).status_code
        == 415
    )

    owners = {"alice": alice, "bob": bob, "carol": carol}
    items = {name: wait_until_settled(http, owners[name.split("-")[0]], image_id) for name, image_id in image.items()}
    assert items["carol-lost"]["status"] == "failed" and items["carol-lost"]["error"] == "original_missing"
    done = {name: item for name, item in items.items() if item["status"] == "done"}
    assert len(done) == 5

    # Bob has his image restored again: one more restoration for the model, still one image.
    second = http.post(f"/v1/images/{image['bob-1']}/restorations", headers=bearer(bob), json={"model": "classical"})
    assert second.status_code == 202, second.text
    assert second.json()["id"] == "r2"
    bob_versions = wait_for_version(http, bob, image["bob-1"], "r2")["restorations"]
    assert [version["status"] for version in bob_versions] == ["done", "done"]
    second_quality = bob_versions[1]["quality"]
    # It writes its own results and the original's thumbnail once more (bytes written, not kept).
    rewritten = (ops_stack.var_dir / "s3" / BUCKET / "thumbnails" / f"{image['bob-1']}-original.jpg").stat().st_size

    # Alice searches with a face of one of her images, rates and reports results.
    search = http.post("/v1/search", headers=bearer(alice), json={"image_id": image["alice-2"], "face_index": 0})
    assert search.status_code == 200, search.text
    assert image["alice-1"] in [match["image_id"] for match in search.json()["matches"]]
    for name, rating in (("alice-1", 1), ("alice-2", 5)):
        response = http.post(f"/v1/images/{image[name]}/feedback", headers=bearer(alice), json={"rating": rating})
        assert response.status_code == 200, response.text
    report = http.post(
        f"/v1/images/{image['alice-1']}/report",
        headers=bearer(alice),
        json={"reason": "wrong-person", "note": "not me"},
    )
    assert report.status_code == 204, report.text

    # The moderation queue shows it; the admin hides it, then deletes it, with reasons.
    def queued() -> dict[str, Any]:
        cases = http.get("/v1/admin/moderation", headers=bearer(admin)).json()["items"]
        (case,) = [case for case in cases if case["image_id"] == image["alice-1"]]
        assert case["reports"] == 1 and case["low_ratings"] == 1
        return case

    case = eventually(queued)
    assert (case["status"], case["user_id"], case["report_reasons"], case["lowest_rating"]) == (
        "open",
        ids["alice"],
        {"wrong-person": 1},
        1,
    )
    assert case["image"]["id"] == image["alice-1"] and case["image"]["restored_url"]
    hide_reason = "reported by its owner as someone else's face"
    hidden = http.post(f"/v1/admin/images/{image['alice-1']}/hide", headers=bearer(admin), json={"reason": hide_reason})
    assert hidden.status_code == 204, hidden.text
    seen = http.get(f"/v1/images/{image['alice-1']}", headers=bearer(alice)).json()
    assert seen["under_review"] is True and seen["status"] == "done"
    assert (seen["original_url"], seen["thumbnail_url"], seen["restored_url"]) == (None, None, None)
    assert http.get(done["alice-1"]["restored_url"]).status_code == 404  # a link issued before
    again = http.post("/v1/search", headers=bearer(alice), json={"image_id": image["alice-2"], "face_index": 0})
    assert image["alice-1"] not in [match["image_id"] for match in again.json()["matches"]]

    def stored_counted() -> dict[str, Any]:
        body = settled(http, admin)
        assert body["usage"]["totals"]["stored_bytes"] == bucket_bytes(ops_stack) + lost_bytes + rewritten
        return body

    before_delete = eventually(stored_counted)
    on_disk = bucket_bytes(ops_stack)
    delete_reason = "not the owner's face: confirmed"
    assert (
        http.delete(
            f"/v1/admin/images/{image['alice-1']}", params={"reason": delete_reason}, headers=bearer(admin)
        ).status_code
        == 204
    )
    # Bob deletes his image with two versions: its original's thumbnail is one file, though
    # each version wrote it.
    assert http.delete(f"/v1/images/{image['bob-1']}", headers=bearer(bob)).status_code == 204
    freed = on_disk - bucket_bytes(ops_stack)
    assert freed > 0

    # A ban and its lifting.
    assert (
        http.post(f"/v1/admin/users/{ids['carol']}/ban", headers=bearer(admin), json={"reason": "spam"}).status_code
        == 200
    )
    assert http.delete(f"/v1/admin/users/{ids['carol']}/ban", headers=bearer(admin)).status_code == 200

    # --- the statistics: exactly the script's numbers ----------------------------------------
    expected = {
        "sign_ups": 4,
        "sign_ins": 5,
        "codes_sent": 5,
        "codes_verified": 5,
        "codes_failed": 1,
        "code_send_failures": 0,
        "uploads": 6,
        "restorations_requested": 1,
        "done": 5,
        "failed": 1,
        "rate_limited": 1,
        "rate_limited_by_limit": {"uploads-per-user": 1},
        "active_users": 4,
        "searches": 2,
        "reports": 1,
        "ratings": 2,
        "freed_bytes": freed,
        "stored_bytes": before_delete["usage"]["totals"]["stored_bytes"],
    }

    def final() -> dict[str, Any]:
        body = stats(http, admin, granularity="hour", **{"from": _iso(started - HOUR)})
        assert body["usage"]["totals"] == expected
        return body

    hourly = eventually(final)
    assert hourly["granularity"] == "hour"
    series = hourly["usage"]["series"]
    assert len(series) >= 2 and all(bucket["start"].endswith(":00:00Z") for bucket in series)
    for name, total in expected.items():
        if name not in ("rate_limited_by_limit", "active_users"):
            assert sum(bucket[name] for bucket in series) == total, name
    daily = stats(http, admin, granularity="day", **{"from": _iso(started - 86400)})
    assert daily["usage"]["totals"] == expected and daily["granularity"] == "day"
    assert sum(bucket["uploads"] for bucket in daily["usage"]["series"]) == 6
    assert hourly["users"] == 4 and hourly["admins"] == 1

    # Model performance, recomputed from the quality figures of every restoration: the images'
    # first ones and Bob's second version.
    (restorer,) = hourly["models"]["restorers"]
    (analyzer,) = hourly["models"]["analyzers"]
    qualities = [item["quality"] for item in done.values()] + [second_quality]
    faces = [item["faces"] for item in done.values()] + [done["bob-1"]["faces"]]  # every version: the same faces
    assert restorer["model"] == qualities[0]["restorer_model"] and analyzer["model"] == qualities[0]["analyzer_model"]
    assert second_quality["restorer_model"] == restorer["model"]
    for model in (restorer, analyzer):
        assert (model["images"], model["done"], model["failed"]) == (7, 6, 1)
        assert model["failure_rate"] == pytest.approx(1 / 7)
        assert model["failures_by_reason"] == {"original_missing": 1}
        assert (model["ratings"], model["mean_rating"]) == (2, pytest.approx(3.0))
    durations = [quality["duration_ms"] for quality in qualities]
    assert restorer["duration_ms"]["p50"] == pytest.approx(np.percentile(durations, 50))
    assert restorer["duration_ms"]["p95"] == pytest.approx(np.percentile(durations, 95))
    for stage in ("analyze", "restore"):
        values = [quality["stage_ms"][stage] for quality in qualities]
        assert restorer["stage_ms"][stage]["p50"] == pytest.approx(np.percentile(values, 50)), stage
        assert restorer["stage_ms"][stage]["p95"] == pytest.approx(np.percentile(values, 95)), stage
    assert restorer["faces_per_image"]["mean"] == pytest.approx(np.mean(faces))
    identities = [quality["identity_min"] for quality, count in zip(qualities, faces, strict=True) if count]
    assert restorer["identity_similarity"]["count"] == len(identities)
    assert restorer["identity_similarity"]["p5"] == pytest.approx(np.percentile(identities, 5))
    assert restorer["identity_similarity"]["p50"] == pytest.approx(np.percentile(identities, 50))
    gains = [quality["sharpness_gain"] for quality in qualities]
    assert restorer["sharpness_gain"]["mean"] == pytest.approx(np.mean(gains))

    # Live queues, from the broker: nothing waits, every consumer is there.
    queues = {queue["consumer"]: queue for queue in hourly["queues"]}
    for consumer in ("inference.classical", "history", "admin"):
        queue = queues[consumer]
        assert queue["available"] and queue["consumers"] >= 1, queue
        assert (queue["messages"], queue["dead_letter_messages"]) == (0, 0), queue
    assert queues["embed"]["consumers"] >= 1

    # --- people: each user's activity --------------------------------------------------------
    alice_view = http.get(f"/v1/admin/users/{ids['alice']}", headers=bearer(admin)).json()
    assert alice_view["user"]["phone"] == alice_phone
    assert alice_view["activity_counts"] == {
        "user.signed_up": 1,
        "user.signed_in": 2,
        "image.uploaded": 2,
        "search.made": 2,
        "feedback.given": 2,
        "image.reported": 1,
        "image.deleted": 1,
    }
    assert alice_view["activity"][0]["kind"] == "image.deleted"
    assert alice_view["activity"][0]["details"] == {"image_id": image["alice-1"], "deleted_by": "admin"}

    def bob_activity() -> dict[str, Any]:
        body: dict[str, Any] = http.get(f"/v1/admin/users/{ids['bob']}", headers=bearer(admin)).json()
        assert body["activity_counts"] == {
            "user.signed_up": 1,
            "user.signed_in": 1,
            "image.uploaded": 1,
            "restoration.requested": 1,
            "image.deleted": 1,
        }
        return body

    bob_view = eventually(bob_activity)
    assert [entry["kind"] for entry in bob_view["activity"][:2]] == ["image.deleted", "restoration.requested"]
    assert bob_view["activity"][1]["details"] == {
        "image_id": image["bob-1"],
        "restoration_id": "r2",
        "model": "classical",
    }
    carol_view = eventually(lambda: _with_unban(http, admin, ids["carol"]))
    assert [entry["kind"] for entry in carol_view["activity"][:2]] == ["user.unbanned", "user.banned"]
    assert carol_view["activity_counts"]["image.uploaded"] == 3
    admin_view = http.get(f"/v1/admin/users/{ids['admin']}", headers=bearer(admin)).json()
    (promotion,) = [entry for entry in admin_view["activity"] if entry["kind"] == "user.role_changed"]
    assert promotion["details"] == {"from": "user", "to": "admin", "via": "sign-in"}

    # --- the audit log lists the moderation with its reasons ---------------------------------
    audit = http.get("/v1/admin/audit", params={"target": image["alice-1"]}, headers=bearer(admin)).json()
    assert [(entry["action"], entry["details"]["reason"]) for entry in audit["items"]] == [
        ("image.delete", delete_reason),
        ("image.hide", hide_reason),
    ]
    assert all(entry["actor_id"] == ids["admin"] for entry in audit["items"])
    hides = http.get("/v1/admin/audit", params={"action": "image.hide"}, headers=bearer(admin)).json()["items"]
    assert [(entry["target"], entry["details"]["owner_id"]) for entry in hides] == [(image["alice-1"], ids["alice"])]
    page = http.get("/v1/admin/audit", params={"limit": 1}, headers=bearer(admin)).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    resolved = http.get("/v1/admin/moderation", params={"status": "resolved"}, headers=bearer(admin)).json()["items"]
    (closed,) = [case for case in resolved if case["image_id"] == image["alice-1"]]
    assert (closed["resolution"], closed["resolution_reason"], closed["image"]) == ("deleted", delete_reason, None)


def settled(client: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    """Stats once every restoration and the report have been counted."""
    body = stats(client, admin, granularity="day")
    totals = body["usage"]["totals"]
    assert (totals["uploads"], totals["done"], totals["failed"], totals["reports"]) == (6, 5, 1, 1)
    assert totals["restorations_requested"] == 1
    return body


def _with_unban(client: httpx.Client, admin: dict[str, str], user_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/admin/users/{user_id}", headers=bearer(admin)).json()
    assert body["activity_counts"].get("user.unbanned") == 1
    return body


def _iso(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def test_a_user_gets_403_from_every_admin_route(ops_stack: RunningStack, http: httpx.Client) -> None:
    user = ops_stack.sign_in(http, random_mobile())
    paths = http.get("/openapi.json").json()["paths"]
    routes = [
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/admin")
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(routes) >= 12
    for method, path in routes:
        url = re.sub(r"\{[^}]+\}", "0123456789abcdef", path)
        response = http.request(method, url, headers=bearer(user), json={"reason": "x"} if method == "POST" else None)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["type"].endswith("/forbidden")
        assert http.request(method, url).status_code == 401, (method, path)


def test_logs_of_an_upload_carry_its_trace_id(ops_stack: RunningStack, http: httpx.Client) -> None:
    tokens = ops_stack.sign_in(http, random_mobile())
    trace_id = uuid.uuid4().hex
    response = http.post(
        "/v1/images",
        headers={**bearer(tokens), "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
        files={"file": ("f.png", face_photo("Tom_Hanks_54745.png").read_bytes(), "image/png")},
    )
    image_id = response.json()["id"]
    wait_until_settled(http, tokens, image_id)
    lines = _log_lines(ops_stack.var_dir, image_id)
    assert {"upload", "inference"} <= {service for service, _ in lines}
    assert all("trace_id" in line for _, line in lines)
    assert all(line["trace_id"] == trace_id for service, line in lines if service in ("upload", "inference"))


SERVICES = ("gateway", "auth", "upload", "history", "admin", "inference")


def _log_lines(var_dir: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    """The platform's own log lines that mention `text` (not the stand-ins' access logs), each
    read as the JSON object it must be."""
    found = []
    for service in SERVICES:
        log = var_dir / "log" / f"{service}.log"
        found += [(service, json.loads(line)) for line in log.read_text(errors="replace").splitlines() if text in line]
    return found
