"""Similar-face search on real photos: the six faces of the insightface wheel's t1.jpg, cut
into single-face photos, embedded by dlib (as the inference side's dlib analyser does) in a
responder on the real broker's embed queue, stored through the projector into the embedded
index, and searched with degraded copies (mirrored, halved, JPEG quality 50)."""

from __future__ import annotations

import functools
import io
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import aio_pika
import cv2
import numpy as np
import pytest
from PIL import Image

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import (
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from facerestore_common.images import ImageLimits
from facerestore_common.tokens import Principal
from history_service.consumer import HistoryProjector
from history_service.embedding_client import EmbeddingClient
from history_service.face_index import FaceIndex, IndexedFace, SearchFilters
from history_service.faces import FaceRepository
from history_service.history import History
from history_service.items import ItemRepository
from history_service.search import FaceSearch, SearchQuery, SearchResult

LIMITS = ImageLimits(max_bytes=1_048_576, max_pixels=40_000_000, max_side=12_000, min_side=64, jpeg_quality=92)
ALICE = Principal("alice", "user", "s-alice", "t-alice", "token")
BOB = Principal("bob", "user", "s-bob", "t-bob", "token")
ADMIN = Principal("root", "admin", "s-root", "t-root", "token")
BASE_MS = 1_700_000_000_000
DAY_MS = 86_400_000


def _decode(content: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(content, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def degrade(content: bytes) -> bytes:
    """Mirrored, halved, JPEG quality 50."""
    image = cv2.flip(_decode(content), 1)
    image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return _jpeg(image, 50)


@pytest.fixture(scope="module")
def group_photo(photo_bytes: Callable[[str], bytes]) -> bytes:
    return photo_bytes("t1.jpg")


@pytest.fixture(scope="module")
def portraits(group_photo: bytes, dlib_faces) -> list[bytes]:
    """Six single-face photos cut from the six-face photo, left to right."""
    image = _decode(group_photo)
    faces = sorted(dlib_faces.detect(group_photo, upsample=0), key=lambda face: face.box[0])
    assert len(faces) == 6
    cuts = []
    for face in faces:
        x0, y0, x1, y1 = face.box
        width, height = x1 - x0, y1 - y0
        top, left = max(0, int(y0 - 0.6 * height)), max(0, int(x0 - 0.6 * width))
        cuts.append(_jpeg(image[top : int(y1 + 0.6 * height), left : int(x1 + 0.6 * width)], 95))
    return cuts


@pytest.fixture(scope="module")
def analyse(dlib_faces) -> Callable[[bytes], list]:
    """The faces the inference side would store for a photo (cached: photos repeat)."""
    return functools.lru_cache(maxsize=None)(lambda content: dlib_faces.detect(content))


AddPhoto = Callable[..., Awaitable[events_pb2.Envelope]]


@pytest.fixture
def add_photo(project: HistoryProjector, events: SimpleNamespace, analyse, dlib_faces) -> AddPhoto:
    """Upload and restore a photo as the other services would announce it; returns the result event."""

    async def add(
        image_id: str,
        user_id: str,
        content: bytes,
        *,
        created_at_ms: int = BASE_MS,
        tags: tuple[str, ...] = (),
        location: str = "",
    ) -> events_pb2.Envelope:
        await project(events.uploaded(image_id, user_id, created_at_ms=created_at_ms, tags=tags, location=location))
        result = events.restored(image_id, user_id)
        restored = result.image_restored
        restored.analyzer_model = dlib_faces.model_id
        for face in analyse(content):
            restored.face_details.add(box=list(face.box), detection_score=face.score, embedding=face.embedding.tolist())
        restored.faces = len(restored.face_details)
        await project(result)
        return result

    return add


@pytest.fixture
async def search(
    items: ItemRepository,
    faces: FaceRepository,
    face_index: FaceIndex,
    embedding_client: EmbeddingClient,
    start_responder,
    dlib_faces,
) -> FaceSearch:
    await start_responder(dlib_faces.answer)
    return FaceSearch(items, faces, face_index, embedding_client, LIMITS)


def ids(result: SearchResult) -> list[str]:
    return [match.item.id for match in result.matches]


async def test_a_degraded_copy_of_each_face_finds_its_own_original_first(
    search: FaceSearch, add_photo: AddPhoto, portraits: list[bytes]
) -> None:
    for n, portrait in enumerate(portraits):
        await add_photo(f"face-{n}", "alice", portrait)

    for n, portrait in enumerate(portraits):
        result = await search.search(ALICE, SearchQuery(image=degrade(portrait)))

        assert ids(result)[0] == f"face-{n}"
        assert sorted(ids(result)) == [f"face-{k}" for k in range(6)]
        scores = [match.score for match in result.matches]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] > 0.97 and all(0.0 <= score < scores[0] for score in scores[1:])
        assert result.model == "dlib-resnet-v1"
        assert [(face.index, face.used) for face in result.query_faces] == [(0, True)]
        assert result.matches[0].face_index == 0 and len(result.matches[0].box) == 4


async def test_the_largest_face_of_the_query_photo_is_used_unless_another_is_picked(
    search: FaceSearch, add_photo: AddPhoto, portraits: list[bytes], group_photo: bytes
) -> None:
    for n, portrait in enumerate(portraits):
        await add_photo(f"face-{n}", "alice", portrait)

    result = await search.search(ALICE, SearchQuery(image=group_photo, top_k=1))

    assert len(result.query_faces) == 6
    (used,) = [face for face in result.query_faces if face.used]
    areas = [(face.box[2] - face.box[0]) * (face.box[3] - face.box[1]) for face in result.query_faces]
    assert areas[used.index] == max(areas)
    # Numbered left to right, as the portraits are.
    assert [face.box[0] for face in result.query_faces] == sorted(face.box[0] for face in result.query_faces)
    assert [face.index for face in result.query_faces] == list(range(6))
    assert ids(result) == [f"face-{used.index}"]

    result = await search.search(ALICE, SearchQuery(image=group_photo, query_face=1, top_k=1))

    assert [face.index for face in result.query_faces if face.used] == [1]
    assert ids(result) == ["face-1"]
    with pytest.raises(Unprocessable) as refused:
        await search.search(ALICE, SearchQuery(image=group_photo, query_face=6))
    assert refused.value.reason == "query-face-not-found"


async def test_a_photo_without_a_face_is_refused_as_no_face_found(search: FaceSearch) -> None:
    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (200, 1))
    landscape = _jpeg(cv2.merge([gradient, gradient.T, np.full_like(gradient, 90)]), 90)

    with pytest.raises(Unprocessable) as refused:
        await search.search(ALICE, SearchQuery(image=landscape))

    assert refused.value.reason == "no-face-found"


@pytest.mark.parametrize(
    ("make", "error", "reason"),
    [
        (lambda p: _gif(), UnsupportedMediaType, "unsupported-media-type"),
        (lambda p: p[: len(p) // 3], Unprocessable, "undecodable-image"),
        (lambda p: _jpeg(cv2.resize(_decode(p), (40, 40)), 90), Unprocessable, "image-too-small"),
        (lambda p: p + b"\0" * LIMITS.max_bytes, PayloadTooLarge, "payload-too-large"),
    ],
    ids=["gif", "truncated", "too-small", "too-large"],
)
async def test_the_query_photo_is_checked_under_the_upload_rules_before_it_is_embedded(
    items: ItemRepository,
    faces: FaceRepository,
    face_index: FaceIndex,
    embedding_client: EmbeddingClient,
    start_responder,
    dlib_faces,
    portraits: list[bytes],
    make: Callable[[bytes], bytes],
    error: type[Exception],
    reason: str,
) -> None:
    responder = await start_responder(dlib_faces.answer)
    search = FaceSearch(items, faces, face_index, embedding_client, LIMITS)

    with pytest.raises(error) as refused:
        await search.search(ALICE, SearchQuery(image=make(portraits[0])))

    assert refused.value.reason == reason  # type: ignore[attr-defined]
    assert responder.requests == []


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (100, 100), (200, 120, 80)).save(out, format="GIF")
    return out.getvalue()


async def test_users_find_only_their_own_faces_and_an_admin_asking_for_all_finds_both(
    search: FaceSearch, add_photo: AddPhoto, portraits: list[bytes]
) -> None:
    await add_photo("alice-copy", "alice", portraits[2])
    await add_photo("bob-copy", "bob", portraits[2])
    query = degrade(portraits[2])

    assert ids(await search.search(ALICE, SearchQuery(image=query))) == ["alice-copy"]
    assert ids(await search.search(BOB, SearchQuery(image=query))) == ["bob-copy"]
    everyone = await search.search(ADMIN, SearchQuery(image=query, all_users=True))
    assert sorted((match.item.id, match.item.user_id) for match in everyone.matches) == [
        ("alice-copy", "alice"),
        ("bob-copy", "bob"),
    ]
    # Without all_users an admin searches their own faces, like anyone.
    assert ids(await search.search(ADMIN, SearchQuery(image=query))) == []
    with pytest.raises(PermissionDenied):
        await search.search(ALICE, SearchQuery(image=query, all_users=True))


async def test_filters_keep_only_matching_tags_locations_and_dates(
    search: FaceSearch, add_photo: AddPhoto, portraits: list[bytes]
) -> None:
    await add_photo("jan", "alice", portraits[0], created_at_ms=BASE_MS, tags=("family",), location="Oslo")
    await add_photo("feb", "alice", portraits[0], created_at_ms=BASE_MS + 31 * DAY_MS, tags=("work",), location="Oslo")
    await add_photo("mar", "alice", portraits[0], created_at_ms=BASE_MS + 60 * DAY_MS, tags=("trip",), location="Rome")
    query = degrade(portraits[0])

    async def found(**filters: object) -> set[str]:
        result = await search.search(ALICE, SearchQuery(image=query, filters=SearchFilters(**filters)))  # type: ignore[arg-type]
        return set(ids(result))

    assert await found() == {"jan", "feb", "mar"}
    assert await found(tags=(" Family ",)) == {"jan"}  # compared as uploads store tags
    assert await found(tags=("work", "trip")) == {"feb", "mar"}
    assert await found(location="Oslo") == {"jan", "feb"}
    assert await found(created_from_ms=BASE_MS + 31 * DAY_MS) == {"feb", "mar"}
    assert await found(created_to_ms=BASE_MS + 31 * DAY_MS, location="Oslo", tags=("work",)) == {"feb"}
    with pytest.raises(InvalidArgument):
        await found(created_from_ms=BASE_MS + 1, created_to_ms=BASE_MS)


async def test_matches_carry_the_items_facts_and_a_deleted_image_disappears_at_once(
    search: FaceSearch, add_photo: AddPhoto, history: History, portraits: list[bytes]
) -> None:
    await add_photo("keep", "alice", portraits[3], created_at_ms=BASE_MS + 5, tags=("family",), location="Oslo")
    await add_photo("gone", "alice", portraits[3])
    query = degrade(portraits[3])
    assert sorted(ids(await search.search(ALICE, SearchQuery(image=query)))) == ["gone", "keep"]

    await history.delete("gone", owner_id="alice", deleted_by="user")

    result = await search.search(ALICE, SearchQuery(image=query))
    (match,) = result.matches
    assert match.item.id == "keep"
    assert (match.item.created_at_ms, match.item.tags, match.item.location) == (BASE_MS + 5, ["family"], "Oslo")
    assert match.item.restored_key and match.item.original_thumbnail_key


async def test_a_redelivered_result_gives_no_duplicate_match(
    search: FaceSearch, add_photo: AddPhoto, project: HistoryProjector, portraits: list[bytes]
) -> None:
    result = await add_photo("once", "alice", portraits[4])
    await project(result)
    await project(result)

    found = await search.search(ALICE, SearchQuery(image=degrade(portraits[4])))

    assert [(match.item.id, match.face_index) for match in found.matches] == [("once", 0)]


async def test_a_face_of_the_history_finds_the_others_of_that_person_but_not_itself(
    search: FaceSearch, add_photo: AddPhoto, portraits: list[bytes]
) -> None:
    await add_photo("original", "alice", portraits[5])
    await add_photo("copy", "alice", degrade(portraits[5]))
    await add_photo("someone-else", "alice", portraits[0])
    await add_photo("bobs", "bob", portraits[5])

    result = await search.search(ALICE, SearchQuery(face=("original", 0)))

    assert ids(result) == ["copy", "someone-else"]
    assert result.matches[0].score > 0.97 > result.matches[1].score
    assert [(face.index, face.used) for face in result.query_faces] == [(0, True)]
    assert result.model == "dlib-resnet-v1"
    # An admin searching everyone's faces with Bob's face finds Alice's of the same person.
    assert ids(await search.search(ADMIN, SearchQuery(face=("bobs", 0), all_users=True)))[:2] == ["original", "copy"]
    for missing in [("original", 1), ("nothing", 0), ("bobs", 0)]:
        with pytest.raises(NotFound):
            await search.search(ALICE, SearchQuery(face=missing))


async def test_top_k_and_min_score_bound_the_answer_and_bad_values_are_refused(
    search: FaceSearch, add_photo: AddPhoto, portraits: list[bytes]
) -> None:
    for n, portrait in enumerate(portraits):
        await add_photo(f"face-{n}", "alice", portrait)
    query = degrade(portraits[1])

    assert ids(await search.search(ALICE, SearchQuery(image=query, top_k=2)))[0] == "face-1"
    assert len((await search.search(ALICE, SearchQuery(image=query, top_k=2))).matches) == 2
    assert ids(await search.search(ALICE, SearchQuery(image=query, min_score=0.97))) == ["face-1"]
    for bad in [SearchQuery(image=query, top_k=51), SearchQuery(image=query, top_k=-1)]:
        with pytest.raises(InvalidArgument):
            await search.search(ALICE, bad)
    for bad in [
        SearchQuery(image=query, min_score=1.5),
        SearchQuery(image=query, min_score=float("nan")),
        SearchQuery(),
    ]:
        with pytest.raises(InvalidArgument):
            await search.search(ALICE, bad)


async def test_faces_of_another_analyser_model_are_never_matched(
    search: FaceSearch, add_photo: AddPhoto, face_index: FaceIndex, items: ItemRepository, portraits: list[bytes]
) -> None:
    await add_photo("dlib-face", "alice", portraits[0])
    await add_photo("arcface-face", "alice", portraits[0])
    item = await items.get("arcface-face")
    assert item is not None
    # The same image re-embedded by a 512-d model: its dlib vectors are gone from the index.
    vector = np.random.default_rng(1).normal(size=512)
    await face_index.replace_image(
        item.id,
        [
            IndexedFace(
                item.id,
                0,
                "alice",
                "insightface-buffalo_l-w600k_r50",
                (vector / np.linalg.norm(vector)).tolist(),
                BASE_MS,
            )
        ],
    )

    result = await search.search(ALICE, SearchQuery(image=degrade(portraits[0])))

    assert ids(result) == ["dlib-face"]


async def test_with_no_embedder_running_a_photo_search_is_unavailable(
    items: ItemRepository,
    faces: FaceRepository,
    face_index: FaceIndex,
    amqp_url: str,
    unique_name: str,
    portraits: list[bytes],
) -> None:
    client = EmbeddingClient(amqp_url, f"{unique_name}-none", timeout_seconds=5.0)
    search = FaceSearch(items, faces, face_index, client, LIMITS)
    try:
        with pytest.raises(Unavailable) as refused:
            await search.search(ALICE, SearchQuery(image=portraits[0]))
    finally:
        await client.close()
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{unique_name}-none.embed")

    assert refused.value.reason == "embedder-unavailable"
