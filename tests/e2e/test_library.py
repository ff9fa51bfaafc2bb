"""A person's library on the running platform, as a client app uses it: edits (JSON merge-patch),
every list filter and the per-status counts, pages that stay put while images come and go,
feedback, the restored image inline, another user's 404s, an export of a 25-image history
checked byte for byte, the export limit, "delete all", and erasing an account, after which no
MongoDB database and no object in the bucket holds anything of that user.

One stack for the module, started with a higher upload limit (the owner uploads 25 photos) and
short background intervals. Photos are variants of one small real face photo (112 x 112), so
restoration takes a fraction of a second each."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from minio import Minio
from PIL import Image, ImageEnhance
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from tests.conftest import face_photo
from tests.stack_harness import Mailbox, RunningStack, random_mobile

PROBLEM = "https://facerestore.dev/problems/"
OWNER_IMAGES = 25
ASTRONAUT = "Ground control 🧑\u200d🚀"


def bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def photo_variant(index: int) -> bytes:
    """A distinct JPEG of the same real face: brightness and a corner mark vary with the index."""
    image = Image.open(face_photo("Tom_Hanks_54745.png")).convert("RGB")
    image = ImageEnhance.Brightness(image).enhance(0.8 + 0.02 * index)
    image.putpixel((index % 8, 0), (index * 9 % 256, 40, 200))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def upload(http: httpx.Client, tokens: dict[str, str], index: int, **fields: str) -> dict[str, Any]:
    response = http.post(
        "/v1/images",
        headers=bearer(tokens),
        files={"file": (f"face-{index}.jpg", photo_variant(index), "image/jpeg")},
        data=fields,
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_until_done(http: httpx.Client, tokens: dict[str, str], image_ids: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    for image_id in image_ids:
        while True:
            body = http.get(f"/v1/images/{image_id}", headers=bearer(tokens)).json()
            assert body["status"] != "failed", body
            if body["status"] == "done":
                break
            assert time.monotonic() < deadline, f"{image_id} not restored within {timeout}s"
            time.sleep(0.3)


def listed(http: httpx.Client, tokens: dict[str, str], **params: Any) -> list[str]:
    response = http.get("/v1/images", headers=bearer(tokens), params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def wait_until_listed(http: httpx.Client, tokens: dict[str, str], image_ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not set(image_ids) <= set(listed(http, tokens)):
        assert time.monotonic() < deadline, f"not all of {image_ids} were listed within {timeout:.0f} s"
        time.sleep(0.1)


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    kind: str = response.json()["type"]
    return kind.removeprefix(PROBLEM)


@dataclass
class Owner:
    tokens: dict[str, str]
    user_id: str
    images: list[dict[str, Any]]
    """Upload answers in upload order: image i has tags all, even|odd, n<i>; location Lisbon
    for i < 10, else Porto; a note saying "beach day" for every fifth, "at home" otherwise."""

    def ids(self, indexes: Any) -> list[str]:
        """Newest first, as the list answers."""
        return [self.images[index]["id"] for index in sorted(indexes, reverse=True)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox) -> Iterator[RunningStack]:
    running = RunningStack(
        var_dir=tmp_path_factory.mktemp("library-stack"),
        stack_id=uuid.uuid4().hex,
        admin_phone=random_mobile(),
        smtp_port=mailbox.port,
        extra_env={
            "RATE_LIMIT_UPLOADS_PER_USER": "200/hour",
            "EXPORT_POLL_SECONDS": "0.5",
            "MAINTENANCE_INTERVAL_SECONDS": "2",
            "ERASURE_RETRY_SECONDS": "2",
        },
    )
    running.start()
    yield running
    code = running.stop()
    running.remove_shared_state()
    assert code == 0, running.logs_tail()


@pytest.fixture(scope="module")
def http(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def owner(stack: RunningStack, http: httpx.Client) -> Owner:
    tokens = stack.sign_in(http, random_mobile())
    user_id = http.get("/v1/me", headers=bearer(tokens)).json()["id"]
    images = [
        upload(
            http,
            tokens,
            index,
            tags=f"all, {'even' if index % 2 == 0 else 'odd'}, n{index}",
            note=f"Photo {index}: " + ("beach day" if index % 5 == 0 else "at home"),
            location="Lisbon" if index < 10 else "Porto",
        )
        for index in range(OWNER_IMAGES)
    ]
    created = [datetime.fromisoformat(image["created_at"]) for image in images]
    assert created == sorted(created) and len(set(created)) == OWNER_IMAGES
    wait_until_done(http, tokens, [image["id"] for image in images])
    return Owner(tokens, user_id, images)


@pytest.fixture(scope="module")
def stranger(stack: RunningStack, http: httpx.Client) -> dict[str, str]:
    return stack.sign_in(http, random_mobile())


@pytest.fixture(scope="module")
def admin(stack: RunningStack, http: httpx.Client) -> dict[str, str]:
    return stack.sign_in(http, stack.admin_sign_in_phone())


# --- filters ---------------------------------------------------------------------------------------


def test_each_filter_keeps_only_matching_images_and_the_counts_follow(owner: Owner, http: httpx.Client) -> None:
    every = range(OWNER_IMAGES)
    assert listed(http, owner.tokens) == owner.ids(every)
    assert listed(http, owner.tokens, status="done") == owner.ids(every)
    assert listed(http, owner.tokens, status=["queued", "processing"]) == []
    assert listed(http, owner.tokens, tag="even") == owner.ids(range(0, OWNER_IMAGES, 2))
    assert listed(http, owner.tokens, tag=["n3", "N4"]) == owner.ids([3, 4])
    window = {"from": owner.images[10]["created_at"], "to": owner.images[14]["created_at"]}
    assert listed(http, owner.tokens, **window) == owner.ids(range(10, 15))
    assert listed(http, owner.tokens, location="Porto") == owner.ids(range(10, OWNER_IMAGES))
    assert listed(http, owner.tokens, q="BEACH") == owner.ids(range(0, OWNER_IMAGES, 5))
    assert listed(http, owner.tokens, q="beach day") == owner.ids(range(0, OWNER_IMAGES, 5))
    assert listed(http, owner.tokens, q="n7") == owner.ids([7])
    assert listed(http, owner.tokens, q="home n7") == owner.ids([7])
    assert listed(http, owner.tokens, q="beach n7") == []
    assert listed(http, owner.tokens, tag="odd", location="Lisbon", q="home") == owner.ids([1, 3, 7, 9])

    response = http.get("/v1/images", headers=bearer(owner.tokens), params={"status": "failed", "counts": "true"})
    assert response.json()["items"] == []
    assert response.json()["counts"] == {"queued": 0, "processing": 0, "done": OWNER_IMAGES, "failed": 0}
    assert http.get("/v1/images", headers=bearer(owner.tokens)).json()["counts"] is None

    refused = http.get("/v1/images", headers=bearer(owner.tokens), params={"status": "lost"})
    assert refused.status_code == 422 and problem_type(refused) == "validation-error"
    backwards = {"from": owner.images[14]["created_at"], "to": owner.images[10]["created_at"]}
    refused = http.get("/v1/images", headers=bearer(owner.tokens), params=backwards)
    assert refused.status_code == 422 and problem_type(refused) == "invalid-filter"


def test_pages_follow_each_other_exactly_while_images_are_added_and_deleted(
    stack: RunningStack, http: httpx.Client
) -> None:
    tokens = stack.sign_in(http, random_mobile())
    ids = [upload(http, tokens, index)["id"] for index in range(6)]
    # The history records an upload when its event arrives, moments after the 202.
    wait_until_listed(http, tokens, ids)
    first = http.get("/v1/images", headers=bearer(tokens), params={"limit": 2}).json()
    assert [item["id"] for item in first["items"]] == [ids[5], ids[4]]

    newer = upload(http, tokens, 6)["id"]
    wait_until_listed(http, tokens, [newer])
    for gone in (ids[4], ids[3]):
        assert http.delete(f"/v1/images/{gone}", headers=bearer(tokens)).status_code == 204

    second = http.get("/v1/images", headers=bearer(tokens), params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = http.get("/v1/images", headers=bearer(tokens), params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [item["id"] for item in second["items"]] == [ids[2], ids[1]]
    assert [item["id"] for item in third["items"]] == [ids[0]]
    assert third["next_cursor"] is None
    assert listed(http, tokens)[0] == newer


# --- edits, feedback, the result inline --------------------------------------------------------------


def test_a_merge_patch_edits_only_what_it_names_and_search_filters_follow(owner: Owner, http: httpx.Client) -> None:
    target, probe = owner.images[24], owner.images[23]
    assert http.get(f"/v1/images/{probe['id']}", headers=bearer(owner.tokens)).json()["faces"] >= 1

    response = http.patch(
        f"/v1/images/{target['id']}",
        headers={**bearer(owner.tokens), "content-type": "application/merge-patch+json"},
        content=json.dumps({"tags": ["Edited", "family", "edited"], "note": ASTRONAUT, "location": None}),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["tags"], body["note"], body["location"]) == (["edited", "family"], ASTRONAUT, "")
    again = http.get(f"/v1/images/{target['id']}", headers=bearer(owner.tokens)).json()
    assert (again["tags"], again["note"], again["location"]) == (["edited", "family"], ASTRONAUT, "")
    # Only the location this time: tags and note stay.
    located = http.patch(f"/v1/images/{target['id']}", headers=bearer(owner.tokens), json={"location": "Faro"}).json()
    assert (located["tags"], located["note"], located["location"]) == (["edited", "family"], ASTRONAUT, "Faro")
    assert listed(http, owner.tokens, q="control") == [target["id"]]

    # The face index follows at once: a search from another face of the same person finds the
    # edited image by its new tag and location, no longer by its old ones.
    def search(**filters: Any) -> list[str]:
        answer = http.post(
            "/v1/search",
            headers=bearer(owner.tokens),
            json={"image_id": probe["id"], "face_index": 0, "top_k": 50, **filters},
        )
        assert answer.status_code == 200, answer.text
        return [match["image_id"] for match in answer.json()["matches"]]

    assert search(tag=["edited"]) == [target["id"]]
    assert search(location="Faro") == [target["id"]]
    assert target["id"] not in search(tag=["n24"])
    assert target["id"] not in search(location="Porto")

    for bad, reason in (
        ({"note": "bell\u0007"}, "invalid-metadata"),
        ({"tags": ["no/slash"]}, "invalid-metadata"),
        ({"location": "two\nlines"}, "invalid-metadata"),
        ({"colour": "red"}, "validation-error"),
        ({"tags": "not-a-list"}, "validation-error"),
    ):
        refused = http.patch(f"/v1/images/{target['id']}", headers=bearer(owner.tokens), json=bad)
        assert refused.status_code == 422 and problem_type(refused) == reason, (bad, refused.text)


def page_cache_hits(stack: RunningStack) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{stack.ports['GATEWAY_METRICS']}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "gateway_page_cache_lookups_total" and sample.labels["result"] == "hit"
    )


def test_a_page_read_again_comes_from_the_gateways_memory_and_each_change_shows_at_once(
    stack: RunningStack, http: httpx.Client
) -> None:
    tokens = stack.sign_in(http, random_mobile())
    ids = [upload(http, tokens, index, tags="kept")["id"] for index in (40, 41)]
    # Recorded from the upload's event, then restored from the worker's: each a write of history's
    # that a kept page must not hide, or these waits would not end.
    wait_until_listed(http, tokens, ids)
    wait_until_done(http, tokens, ids)
    params = {"limit": 3, "tag": "kept"}
    first = http.get("/v1/images", headers=bearer(tokens), params=params)
    hits = page_cache_hits(stack)
    again = [http.get("/v1/images", headers=bearer(tokens), params=params) for _ in range(3)]
    assert page_cache_hits(stack) >= hits + 2
    assert all(response.content == first.content for response in again)

    # Each change is in the very next read: an edit, feedback, a new version, a delete.
    newest = ids[1]
    note = f"kept fresh {uuid.uuid4().hex}"
    edited = http.patch(f"/v1/images/{newest}", headers=bearer(tokens), json={"note": note})
    assert edited.status_code == 200, edited.text
    page = http.get("/v1/images", headers=bearer(tokens), params=params).json()
    assert page["items"][0]["id"] == newest and page["items"][0]["note"] == note

    rated = http.post(f"/v1/images/{newest}/feedback", headers=bearer(tokens), json={"rating": 2})
    assert rated.status_code in (200, 201), rated.text
    page = http.get("/v1/images", headers=bearer(tokens), params=params).json()
    assert page["items"][0]["feedback"]["rating"] == 2

    versions = len(page["items"][0]["restorations"])
    asked = http.post(f"/v1/images/{newest}/restorations", headers=bearer(tokens), json={"model": "classical"})
    assert asked.status_code == 202, asked.text
    deadline = time.monotonic() + 120
    while True:
        shown = http.get("/v1/images", headers=bearer(tokens), params=params).json()["items"][0]
        if len(shown["restorations"]) == versions + 1 and shown["restorations"][-1]["status"] == "done":
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)

    assert http.delete(f"/v1/images/{newest}", headers=bearer(tokens)).status_code == 204
    assert [item["id"] for item in http.get("/v1/images", headers=bearer(tokens), params=params).json()["items"]] == [
        ids[0]
    ]


def test_feedback_is_shown_on_the_image_and_a_new_rating_replaces_the_old(owner: Owner, http: httpx.Client) -> None:
    image_id = owner.images[3]["id"]

    first = http.post(
        f"/v1/images/{image_id}/feedback", headers=bearer(owner.tokens), json={"rating": 2, "comment": "a bit soft"}
    )
    second = http.post(f"/v1/images/{image_id}/feedback", headers=bearer(owner.tokens), json={"rating": 5})

    assert first.status_code == 200 and first.json()["rating"] == 2, first.text
    assert second.status_code == 200, second.text
    shown = http.get(f"/v1/images/{image_id}", headers=bearer(owner.tokens)).json()["feedback"]
    assert (shown["rating"], shown["comment"]) == (5, "")
    assert http.get(f"/v1/images/{owner.images[4]['id']}", headers=bearer(owner.tokens)).json()["feedback"] is None
    for rating in (0, 6):
        refused = http.post(f"/v1/images/{image_id}/feedback", headers=bearer(owner.tokens), json={"rating": rating})
        assert refused.status_code == 422 and problem_type(refused) == "validation-error"


def test_the_restored_image_inline_is_the_same_bytes_as_its_link(owner: Owner, http: httpx.Client) -> None:
    image_id = owner.images[5]["id"]

    inline = http.get(f"/v1/images/{image_id}", headers=bearer(owner.tokens), params={"include": "restored_base64"})
    plain = http.get(f"/v1/images/{image_id}", headers=bearer(owner.tokens))

    assert inline.status_code == 200, inline.text
    linked = http.get(inline.json()["restored_url"])
    assert linked.status_code == 200
    assert base64.b64decode(inline.json()["restored_base64"]) == linked.content
    assert linked.content[:2] == b"\xff\xd8"
    assert plain.json()["restored_base64"] is None
    refused = http.get(f"/v1/images/{image_id}", headers=bearer(owner.tokens), params={"include": "everything"})
    assert refused.status_code == 422 and problem_type(refused) == "validation-error"


def test_another_user_gets_404_for_all_of_it(owner: Owner, stranger: dict[str, str], http: httpx.Client) -> None:
    image_id = owner.images[6]["id"]
    attempts = [
        http.patch(f"/v1/images/{image_id}", headers=bearer(stranger), json={"note": "mine now"}),
        http.post(f"/v1/images/{image_id}/feedback", headers=bearer(stranger), json={"rating": 1}),
        http.get(f"/v1/images/{image_id}", headers=bearer(stranger), params={"include": "restored_base64"}),
        http.get(f"/v1/images/{image_id}", headers=bearer(stranger)),
        http.delete(f"/v1/images/{image_id}", headers=bearer(stranger)),
    ]
    for response in attempts:
        assert response.status_code == 404 and problem_type(response) == "not-found", response.text
    assert listed(http, stranger, q="home") == []
    # And nothing changed for the owner.
    unchanged = http.get(f"/v1/images/{image_id}", headers=bearer(owner.tokens)).json()
    assert unchanged["note"] == "Photo 6: at home" and unchanged["feedback"] is None


# --- export ----------------------------------------------------------------------------------------


def wait_for_export(http: httpx.Client, tokens: dict[str, str], export_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(f"/v1/exports/{export_id}", headers=bearer(tokens)).json()
        assert body["status"] in ("queued", "running", "done"), body
        if body["status"] == "done":
            return body
        assert time.monotonic() < deadline, f"export not done within {timeout}s: {body}"
        time.sleep(0.5)


def test_an_export_of_25_images_holds_each_file_as_served_and_metadata_naming_every_item(
    owner: Owner, stranger: dict[str, str], http: httpx.Client
) -> None:
    created = http.post("/v1/exports", headers=bearer(owner.tokens))
    assert created.status_code == 202, created.text
    assert created.headers["RateLimit-Limit"] == "3" and created.headers["RateLimit-Remaining"] == "2"
    export_id = created.json()["id"]
    assert created.headers["Location"].endswith(f"/v1/exports/{export_id}")

    done = wait_for_export(http, owner.tokens, export_id)

    assert done["progress"] == {"items_done": OWNER_IMAGES, "items_total": OWNER_IMAGES}
    download = http.get(done["download_url"])
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/zip"
    assert int(download.headers["content-length"]) == len(download.content) == done["size_bytes"]
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert archive.testzip() is None
    names = set(archive.namelist())
    served = {
        image["id"]: http.get(f"/v1/images/{image['id']}", headers=bearer(owner.tokens)).json()
        for image in owner.images
    }
    for image_id, image in served.items():
        original = next(name for name in names if name.startswith(f"originals/{image_id}."))
        restored = next(name for name in names if name.startswith(f"restored/{image_id}."))
        assert archive.read(original) == http.get(image["original_url"]).content, image_id
        assert archive.read(restored) == http.get(image["restored_url"]).content, image_id

    metadata = json.loads(archive.read("metadata.json"))
    assert metadata["count"] == OWNER_IMAGES
    by_id = {item["id"]: item for item in metadata["items"]}
    assert set(by_id) == set(served)
    for image_id, image in served.items():
        item = by_id[image_id]
        assert (item["tags"], item["note"], item["location"]) == (image["tags"], image["note"], image["location"])
        assert item["status"] == "done" and item["quality"]["backend"] == image["quality"]["backend"]
        assert (item["feedback"] or {}).get("rating") == (image["feedback"] or {}).get("rating")
    rows = list(csv.DictReader(io.StringIO(archive.read("metadata.csv").decode("utf-8-sig"))))
    assert {row["id"] for row in rows} == set(served)
    assert {row["created_at"][:19] for row in rows} == {image["created_at"][:19] for image in served.values()}

    assert [item["id"] for item in http.get("/v1/exports", headers=bearer(owner.tokens)).json()["items"]] == [export_id]
    refused = http.get(f"/v1/exports/{export_id}", headers=bearer(stranger))
    assert refused.status_code == 404 and problem_type(refused) == "not-found"
    forged = http.get(done["download_url"][:-4] + "abcd")
    assert forged.status_code == 404 and problem_type(forged) == "not-found"


def test_a_fourth_export_in_a_day_is_refused_with_rate_limit_headers(stack: RunningStack, http: httpx.Client) -> None:
    tokens = stack.sign_in(http, random_mobile())
    answers = [http.post("/v1/exports", headers=bearer(tokens)) for _ in range(4)]

    assert [answer.status_code for answer in answers] == [202, 202, 202, 429]
    assert [answer.headers["RateLimit-Remaining"] for answer in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert problem_type(refused) == "rate-limited" and refused.json()["limit"] == "exports-per-user"
    assert int(refused.headers["Retry-After"]) > 23 * 3600
    assert refused.headers["RateLimit-Policy"] == "3;w=86400"


# --- deleting everything ---------------------------------------------------------------------------


def test_delete_all_empties_the_history_and_removes_every_file(stack: RunningStack, http: httpx.Client) -> None:
    tokens = stack.sign_in(http, random_mobile())
    ids = [upload(http, tokens, index)["id"] for index in range(3)]
    wait_until_done(http, tokens, ids)
    links = [http.get(f"/v1/images/{image_id}", headers=bearer(tokens)).json()["original_url"] for image_id in ids]

    response = http.delete("/v1/images", headers=bearer(tokens))

    assert response.status_code == 200 and response.json() == {"deleted": 3}
    assert listed(http, tokens) == []
    deadline = time.monotonic() + 30
    while any(http.get(link).status_code != 404 for link in links):
        assert time.monotonic() < deadline, "files still served 30 s after delete-all"
        time.sleep(0.5)


# --- erasing an account ----------------------------------------------------------------------------


def everything_in_mongo(stack: RunningStack) -> dict[str, list[str]]:
    """Every document of every collection of every database, as text, by database."""
    with MongoClient(f"mongodb://127.0.0.1:{stack.ports['MONGO']}") as client:
        return {
            name: [
                json.dumps(document, default=str, ensure_ascii=False)
                for collection in client[name].list_collection_names()
                for document in client[name][collection].find({})
            ]
            for name in client.list_database_names()
        }


def everything_in_the_bucket(stack: RunningStack) -> list[str]:
    client = Minio(
        f"127.0.0.1:{stack.ports['S3']}",
        access_key="dev-only-access-key",
        secret_key="dev-only-secret-key",
        secure=False,
        region="us-east-1",
    )
    return [
        f"{bucket.name}/{item.object_name}"
        for bucket in client.list_buckets()
        for item in client.list_objects(bucket.name, recursive=True)
    ]


def test_erasing_an_account_leaves_nothing_of_it_anywhere_and_another_users_data_untouched(
    stack: RunningStack, http: httpx.Client, mailbox: Mailbox, owner: Owner, admin: dict[str, str]
) -> None:
    phone = random_mobile()
    email = f"erase-{uuid.uuid4().hex[:8]}@example.org"
    tokens = stack.sign_in(http, phone)
    user_id = http.get("/v1/me", headers=bearer(tokens)).json()["id"]
    assert http.post("/v1/me/email", headers=bearer(tokens), json={"email": email}).status_code == 202
    confirmed = http.post(
        "/v1/me/email/verify", headers=bearer(tokens), json={"email": email, "code": mailbox.latest_code(email)}
    )
    assert confirmed.status_code == 200, confirmed.text
    ids = [upload(http, tokens, index, tags="mine", note="my own note")["id"] for index in range(3)]
    wait_until_done(http, tokens, ids)
    assert http.post(f"/v1/images/{ids[0]}/feedback", headers=bearer(tokens), json={"rating": 4}).status_code == 200
    export_id = http.post("/v1/exports", headers=bearer(tokens)).json()["id"]
    wait_for_export(http, tokens, export_id)
    # An admin removes one of the images: the audit log names its owner.
    removed = http.delete(f"/v1/admin/images/{ids[2]}", headers=bearer(admin), params={"reason": "test"})
    assert removed.status_code == 204, removed.text
    identifying = [user_id, phone, email]
    assert any(user_id in doc for docs in everything_in_mongo(stack).values() for doc in docs)
    assert any(image_id in key for image_id in ids for key in everything_in_the_bucket(stack))
    owner_before = everything_in_the_bucket(stack)

    erased = http.delete("/v1/me", headers=bearer(tokens))

    assert erased.status_code == 202, erased.text
    assert user_id not in erased.text
    # Closed at once: the access token and the refresh token are refused from now on.
    assert http.get("/v1/me", headers=bearer(tokens)).status_code == 401
    assert http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401

    def leftovers() -> list[str]:
        found = [
            f"{database}: {doc[:160]}"
            for database, docs in everything_in_mongo(stack).items()
            for doc in docs
            if any(value in doc for value in identifying)
            # The images and their records are gone from the services that held them (admin keeps
            # anonymous per-image statistics and the audit entry's target, no longer linked to anyone).
            or (database != "facerestore_admin" and any(value in doc for value in [*ids, export_id]))
        ]
        found += [key for key in everything_in_the_bucket(stack) if any(value in key for value in [*ids, export_id])]
        return found

    deadline = time.monotonic() + 60
    while left := leftovers():
        assert time.monotonic() < deadline, f"still there 60 s after the erasure: {left}"
        time.sleep(1)

    # The audit log keeps what the admin did, naming the owner by a pseudonym only.
    with MongoClient(f"mongodb://127.0.0.1:{stack.ports['MONGO']}") as client:
        entry = client["facerestore_admin"]["audit_log"].find_one({"target": ids[2]})
    assert entry is not None and entry["details"]["owner_id"].startswith("erased-")
    # Another user's images and files are untouched.
    assert listed(http, owner.tokens) == owner.ids(range(OWNER_IMAGES))
    owner_keys = [key for key in owner_before if any(image["id"] in key for image in owner.images)]
    assert len(owner_keys) >= 2 * OWNER_IMAGES
    assert set(owner_keys) <= set(everything_in_the_bucket(stack))
    # The number and the address are free: signing in again starts a new, empty account, and
    # the old address no longer signs anyone in.
    again = stack.sign_in(http, phone)
    me = http.get("/v1/me", headers=bearer(again)).json()
    assert me["id"] != user_id and me["email"] is None
    assert listed(http, again) == []
    sent = mailbox.count_to(email)
    assert http.post("/v1/auth/email/otp", json={"email": email}).status_code == 202
    time.sleep(1)
    assert mailbox.count_to(email) == sent
