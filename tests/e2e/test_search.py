"""Similar-face search on the running platform, with real photos: the six faces of t1.jpg (from
the insightface wheel) are cut out with dlib's HOG detector (the detector the inference
service's dlib analyser runs), each uploaded alone with its own tags and location, restored,
and then searched for as a client app would, through POST /v1/search.

Uploads happen once per module (module-scoped fixtures); every user has a role in the story:
anna owns the six faces, ben uploads the same photo of face 0 (and a second photo of that
person), dora uploads a face she later deletes, eve one whose image.restored is delivered
again. Each user makes fewer searches than the per-minute search limit (30) allows."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import cv2
import dlib
import httpx
import numpy as np
import pytest
from pymongo import MongoClient

from facerestore.events.v1 import events_pb2
from tests.conftest import face_photo
from tests.stack_harness import RunningStack, random_mobile

PROBLEM_JSON = "application/problem+json"
LOCATIONS = ("Lisbon", "Lisbon", "Lisbon", "Porto", "Porto", "Porto")
SEARCH_ACTION = "faces.search_all"
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def group_photo() -> np.ndarray:
    image = cv2.imread(str(face_photo("t1.jpg")), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def face_crops(group: np.ndarray) -> list[np.ndarray]:
    """Each face of the group photo alone, left to right, with a margin of 40 % of its box."""
    rects = dlib.get_frontal_face_detector()(cv2.cvtColor(group, cv2.COLOR_BGR2RGB), 1)
    boxes = sorted((r.left(), r.top(), r.right(), r.bottom()) for r in rects)
    assert len(boxes) == 6, boxes
    height, width = group.shape[:2]
    crops = []
    for x0, y0, x1, y1 in boxes:
        margin = int(0.4 * (x1 - x0))
        crop = group[max(0, y0 - margin) : min(height, y1 + margin), max(0, x0 - margin) : min(width, x1 + margin)]
        assert min(crop.shape[:2]) >= 64, crop.shape
        crops.append(crop)
    return crops


def degraded(crop: np.ndarray) -> bytes:
    """Mildly degraded: mirrored, halved, JPEG quality 50."""
    small = cv2.resize(cv2.flip(crop, 1), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return jpeg(small, quality=50)


def upload(http: httpx.Client, tokens: dict[str, str], content: bytes, tags: str, location: str) -> dict[str, Any]:
    response = http.post(
        "/v1/images",
        headers=bearer(tokens),
        files={"file": ("face.jpg", content, "image/jpeg")},
        data={"tags": tags, "location": location},
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_until_done(http: httpx.Client, tokens: dict[str, str], image_ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pending = list(image_ids)
    while pending:
        response = http.get(f"/v1/images/{pending[0]}", headers=bearer(tokens))
        if response.status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.05)  # the history shows an upload once it has read its announcement
            continue
        assert response.status_code == 200, response.text
        status = response.json()["status"]
        assert status != "failed", response.text
        if status == "done":
            pending.pop(0)
            continue
        assert time.monotonic() < deadline, f"{pending} not restored within {timeout}s"
        time.sleep(0.3)


def search(http: httpx.Client, tokens: dict[str, str], photo: bytes | None = None, **options: Any) -> httpx.Response:
    if photo is None:
        return http.post("/v1/search", headers=bearer(tokens), json=options)
    data = {key: value if isinstance(value, list) else str(value) for key, value in options.items()}
    return http.post("/v1/search", headers=bearer(tokens), files={"file": ("q.jpg", photo, "image/jpeg")}, data=data)


def found(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [match["image_id"] for match in response.json()["matches"]]


def search_until(
    http: httpx.Client, tokens: dict[str, str], photo: bytes, done: Any, timeout: float = 15, **options: Any
) -> httpx.Response:
    """Search again (sparingly: searches are limited) until done(matched image ids) holds: the index
    is fed by events and may trail what the history list already shows."""
    deadline = time.monotonic() + timeout
    while True:
        response = search(http, tokens, photo, **options)
        if done(found(response)) or time.monotonic() > deadline:
            return response
        time.sleep(1.5)


@dataclass
class Anna:
    tokens: dict[str, str]
    ids: list[str]
    created: list[datetime]
    crops: list[np.ndarray]
    boundary: datetime
    """Between the creation times of faces 0-2 and faces 3-5."""


@dataclass
class Ben:
    tokens: dict[str, str]
    same_photo_id: str
    second_photo_id: str


@pytest.fixture(scope="module")
def http(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    return face_crops(group_photo())


@pytest.fixture(scope="module")
def anna(stack: RunningStack, http: httpx.Client, crops: list[np.ndarray]) -> Anna:
    tokens = stack.sign_in(http, random_mobile())
    uploaded = []
    for index, crop in enumerate(crops):
        if index == 3:
            time.sleep(0.05)  # a clear gap between the two halves, for the date filters
        parity = "even" if index % 2 == 0 else "odd"
        uploaded.append(upload(http, tokens, jpeg(crop), f"p{index}, {parity}", LOCATIONS[index]))
    ids = [item["id"] for item in uploaded]
    created = [datetime.fromisoformat(item["created_at"]) for item in uploaded]
    assert max(created[:3]) < min(created[3:])
    wait_until_done(http, tokens, ids)
    boundary = max(created[:3]) + (min(created[3:]) - max(created[:3])) / 2
    return Anna(tokens, ids, created, crops, boundary)


@pytest.fixture(scope="module")
def ben(stack: RunningStack, http: httpx.Client, crops: list[np.ndarray], anna: Anna) -> Ben:
    """The same photo of face 0 as anna's, and a second, mirrored one of that person."""
    tokens = stack.sign_in(http, random_mobile())
    same = upload(http, tokens, jpeg(crops[0]), "ben", "Faro")["id"]
    second = upload(http, tokens, jpeg(cv2.flip(crops[0], 1), quality=70), "ben", "Faro")["id"]
    wait_until_done(http, tokens, [same, second])
    return Ben(tokens, same, second)


@pytest.fixture(scope="module")
def admin(stack: RunningStack, http: httpx.Client) -> dict[str, str]:
    tokens = stack.sign_in(http, stack.admin_sign_in_phone())
    assert http.get("/v1/me", headers=bearer(tokens)).json()["role"] == "admin"
    return tokens


def test_a_degraded_copy_of_each_face_finds_its_own_original_first(anna: Anna, http: httpx.Client) -> None:
    for index, crop in enumerate(anna.crops):
        response = search_until(http, anna.tokens, degraded(crop), lambda ids: len(ids) == 6)
        ids = found(response)
        body = response.json()
        assert ids[0] == anna.ids[index], f"face {index}: {body['matches']}"
        # Only anna's six faces, each once, best first, every score in 0..1.
        assert sorted(ids) == sorted(anna.ids)
        scores = [match["score"] for match in body["matches"]]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= score <= 1.0 for score in scores)
        assert scores[0] > scores[1]
        best = body["matches"][0]
        assert best["face_index"] == 0
        assert best["tags"] == [f"p{index}", "even" if index % 2 == 0 else "odd"]
        assert best["location"] == LOCATIONS[index]
        assert abs(datetime.fromisoformat(best["created_at"]) - anna.created[index]).total_seconds() < 1
        assert len(best["box"]) == 4
        assert [face["used"] for face in body["query_faces"]] == [True]
        assert body["model"]


def test_match_urls_download_the_matched_images(anna: Anna, http: httpx.Client) -> None:
    best = search(http, anna.tokens, degraded(anna.crops[1]), top_k=1).json()["matches"]
    assert len(best) == 1
    for url in (best[0]["thumbnail_url"], best[0]["restored_url"]):
        image = http.get(url)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR) is not None


def test_filters_by_tag_location_and_date_keep_only_matching_items(anna: Anna, http: httpx.Client) -> None:
    query = degraded(anna.crops[5])
    ids = anna.ids
    boundary = anna.boundary.isoformat()

    assert set(found(search(http, anna.tokens, query, tag=["even"]))) == {ids[0], ids[2], ids[4]}
    assert set(found(search(http, anna.tokens, query, tag=["P1", "p4"]))) == {ids[1], ids[4]}
    assert set(found(search(http, anna.tokens, query, location="Porto"))) == {ids[3], ids[4], ids[5]}
    assert set(found(search(http, anna.tokens, query, **{"from": boundary}))) == {ids[3], ids[4], ids[5]}
    assert set(found(search(http, anna.tokens, query, to=boundary))) == {ids[0], ids[1], ids[2]}
    both = search(http, anna.tokens, query, tag=["odd"], location="Lisbon", to=boundary)
    assert found(both) == [ids[1]]
    assert found(search(http, anna.tokens, query, location="Lisbon", tag=["p5"])) == []


def test_top_k_and_min_score_trim_the_answer(anna: Anna, http: httpx.Client) -> None:
    ranked = search(http, anna.tokens, degraded(anna.crops[2])).json()["matches"]
    top_two = found(search(http, anna.tokens, degraded(anna.crops[2]), top_k=2))
    threshold = (ranked[0]["score"] + ranked[1]["score"]) / 2
    above = found(search(http, anna.tokens, degraded(anna.crops[2]), min_score=threshold))

    assert top_two == [match["image_id"] for match in ranked[:2]]
    assert above == [anna.ids[2]]


def test_another_users_faces_never_appear(anna: Anna, ben: Ben, http: httpx.Client) -> None:
    """The same photo of face 0 belongs to both; each of them finds only their own copy."""
    annas = found(search(http, anna.tokens, jpeg(anna.crops[0])))
    bens = found(search_until(http, ben.tokens, jpeg(anna.crops[0]), lambda ids: len(ids) == 2))

    assert annas[0] == anna.ids[0]
    assert not {ben.same_photo_id, ben.second_photo_id} & set(annas)
    assert set(bens) == {ben.same_photo_id, ben.second_photo_id}
    assert bens[0] == ben.same_photo_id


def test_an_admin_searching_all_users_sees_both_and_is_recorded(
    stack: RunningStack, anna: Anna, ben: Ben, admin: dict[str, str], http: httpx.Client
) -> None:
    started_ms = int(time.time() * 1000)
    response = search(http, admin, jpeg(anna.crops[0]), scope="all", tag=["p0", "ben"])
    matches = response.json()["matches"] if response.status_code == 200 else response.text

    assert response.status_code == 200, matches
    by_image = {match["image_id"]: match for match in matches}
    assert set(by_image) == {anna.ids[0], ben.same_photo_id, ben.second_photo_id}
    # The two identical photos first (the same embedding), then ben's second photo.
    assert {matches[0]["image_id"], matches[1]["image_id"]} == {anna.ids[0], ben.same_photo_id}
    assert matches[0]["score"] == pytest.approx(matches[1]["score"], abs=1e-4)
    owners = {by_image[anna.ids[0]]["user_id"], by_image[ben.same_photo_id]["user_id"]}
    assert len(owners) == 2 and None not in owners

    admin_id = http.get("/v1/me", headers=bearer(admin)).json()["id"]
    with MongoClient(f"mongodb://127.0.0.1:{stack.ports['MONGO']}") as mongo:
        entries = list(
            mongo["facerestore_admin"]["audit_log"].find(
                {"actor_id": admin_id, "action": SEARCH_ACTION, "at_ms": {"$gte": started_ms}}
            )
        )
    assert len(entries) == 1, entries
    details = entries[0]["details"]
    assert entries[0]["target"] == "photo"
    assert sorted(details["tags"]) == ["ben", "p0"]
    assert details["photo_bytes"] == len(jpeg(anna.crops[0]))
    assert not any(isinstance(value, bytes) for value in details.values())


def test_a_user_may_not_search_all_users(anna: Anna, ben: Ben, http: httpx.Client) -> None:
    response = search(http, ben.tokens, None, image_id=anna.ids[0], face_index=0, scope="all")

    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"].endswith("/forbidden")


def test_json_search_with_a_stored_face_finds_that_person(ben: Ben, http: httpx.Client) -> None:
    response = search(http, ben.tokens, None, image_id=ben.same_photo_id, face_index=0)
    others = [image_id for image_id in found(response) if image_id != ben.same_photo_id]

    assert others == [ben.second_photo_id]
    assert len(response.json()["query_faces"]) == 1


def test_json_search_with_an_unknown_or_someone_elses_face_is_not_found(
    anna: Anna, ben: Ben, http: httpx.Client
) -> None:
    # Someone else's face, a face the image does not have, an image that does not exist.
    for image_id, face_index in ((anna.ids[0], 0), (ben.same_photo_id, 7), (uuid.uuid4().hex, 0)):
        response = search(http, ben.tokens, None, image_id=image_id, face_index=face_index)
        assert response.status_code == 404, response.text
        assert response.json()["type"].endswith("/face-not-found")


def test_a_deleted_image_disappears_from_results(
    stack: RunningStack, http: httpx.Client, crops: list[np.ndarray]
) -> None:
    dora = stack.sign_in(http, random_mobile())
    image_id = upload(http, dora, jpeg(crops[3]), "dora", "Braga")["id"]
    wait_until_done(http, dora, [image_id])
    query = degraded(crops[3])
    assert found(search_until(http, dora, query, lambda ids: ids == [image_id])) == [image_id]

    assert http.delete(f"/v1/images/{image_id}", headers=bearer(dora)).status_code == 204
    assert found(search_until(http, dora, query, lambda ids: ids == [])) == []


def test_a_photo_without_a_face_is_refused(anna: Anna, http: httpx.Client) -> None:
    below_the_faces = group_photo()[520:, :]
    response = search(http, anna.tokens, jpeg(below_the_faces))

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"].endswith("/no-face-found")


def test_searches_carry_the_search_limit_headers(
    stack: RunningStack, http: httpx.Client, crops: list[np.ndarray]
) -> None:
    tokens = stack.sign_in(http, random_mobile())
    answers = [search(http, tokens, degraded(crops[0])) for _ in range(2)]

    for answer in answers:
        assert found(answer) == []  # a new user has no faces yet
        assert answer.headers["ratelimit-limit"] == "30"
        assert answer.headers["ratelimit-policy"] == "30;w=60"
        assert 0 < int(answer.headers["ratelimit-reset"]) <= 60
    assert [int(answer.headers["ratelimit-remaining"]) for answer in answers] == [29, 28]


# --- a redelivered image.restored -------------------------------------------------------------


async def _listen(stack: RunningStack, queue_name: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=False, auto_delete=False)
        await queue.bind(f"{stack.namespace}.events", routing_key="image.restored")


async def _take_restored(queue_name: str, image_id: str, within: float = 90) -> bytes:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.2)
            elif events_pb2.Envelope.FromString(message.body).image_restored.image_id == image_id:
                return message.body
    raise AssertionError(f"no image.restored for {image_id}")


async def _publish(stack: RunningStack, envelope: events_pb2.Envelope) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{stack.namespace}.events", ensure=False)
        message = aio_pika.Message(
            body=envelope.SerializeToString(),
            content_type="application/x-protobuf",
            type=envelope.type,
            message_id=envelope.event_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={"traceparent": envelope.traceparent},
        )
        await exchange.publish(message, routing_key=envelope.type, mandatory=True)


async def _delete_queue(queue_name: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue_name)


def _processed_by_history(stack: RunningStack, event_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with MongoClient(f"mongodb://127.0.0.1:{stack.ports['MONGO']}") as mongo:
        processed = mongo["facerestore_history"]["processed_events"]
        while processed.find_one({"_id": f"history:{event_id}"}) is None:
            assert time.monotonic() < deadline, f"history did not handle {event_id}"
            time.sleep(0.2)


def test_a_redelivered_image_restored_gives_no_duplicate_match(
    stack: RunningStack, http: httpx.Client, crops: list[np.ndarray]
) -> None:
    eve = stack.sign_in(http, random_mobile())
    probe = f"{stack.namespace}.search-test-probe"
    asyncio.run(_listen(stack, probe))
    try:
        image_id = upload(http, eve, jpeg(crops[4]), "eve", "Evora")["id"]
        restored = events_pb2.Envelope.FromString(asyncio.run(_take_restored(probe, image_id)))
    finally:
        asyncio.run(_delete_queue(probe))
    wait_until_done(http, eve, [image_id])
    query = degraded(crops[4])
    assert found(search_until(http, eve, query, lambda ids: ids == [image_id])) == [image_id]

    # The very same event again (a redelivery), and the same outcome under a new event id.
    again = events_pb2.Envelope()
    again.CopyFrom(restored)
    copy = events_pb2.Envelope()
    copy.CopyFrom(restored)
    copy.event_id = uuid.uuid4().hex
    asyncio.run(_publish(stack, again))
    asyncio.run(_publish(stack, copy))
    _processed_by_history(stack, copy.event_id)

    response = search(http, eve, query, top_k=50)
    assert found(response) == [image_id]
    assert [match["face_index"] for match in response.json()["matches"]] == [0]
    # Searching by that very face leaves the face itself out: a duplicate of it would be all that is left.
    assert found(search(http, eve, None, image_id=image_id, face_index=0, top_k=50)) == []
    assert datetime.fromisoformat(response.json()["matches"][0]["created_at"]) <= datetime.now(UTC)
