"""The history projector: image events, applied in any order and any number of times, keep one
item per image whose status only moves forward, and never revive a deleted image."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import NotFound
from facerestore_common.events import new_envelope
from facerestore_common.storage import BlobStore
from history_service.consumer import HistoryProjector
from history_service.face_index import FaceHit, FaceIndex, SearchFilters
from history_service.faces import FaceRepository
from history_service.history import History
from history_service.items import ItemRepository, sort_key

USER = "user-1"
IMAGE = "img-0001"


async def test_uploaded_event_creates_a_queued_item_with_the_users_facts(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(
        events.uploaded(
            IMAGE, USER, created_at_ms=1_700_000_123_456, tags=("family", "1970s"), note="Grandma", location="Oslo"
        )
    )

    item = await items.get(IMAGE)
    assert item is not None
    assert item.status == "queued"
    assert item.user_id == USER
    assert item.tags == ["family", "1970s"]
    assert item.note == "Grandma"
    assert item.location == "Oslo"
    assert (item.width, item.height) == (640, 480)
    assert item.original_key == f"originals/{USER}/{IMAGE}.jpg"
    assert item.created_at_ms == 1_700_000_123_456
    assert item.sort_key == sort_key(1_700_000_123_456, IMAGE)
    assert item.restored_key == ""
    assert item.quality == {}


async def test_processing_event_moves_a_queued_item_to_processing(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded(IMAGE, USER))
    await project(events.processing(IMAGE, USER))

    item = await items.get(IMAGE)
    assert item is not None
    assert item.status == "processing"
    assert item.updated_at_ms > 0


async def test_restored_event_marks_the_item_done_with_quality_and_result_keys(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded(IMAGE, USER))
    await project(events.processing(IMAGE, USER))
    await project(
        events.restored(IMAGE, USER, faces=2, sharpness_before=40.0, sharpness_after=100.0, duration_ms=321.5)
    )

    item = await items.get(IMAGE)
    assert item is not None
    assert item.status == "done"
    assert item.faces == 2
    assert item.restored_key == f"restored/{USER}/{IMAGE}.png"
    assert item.original_thumbnail_key == f"thumbnails/{USER}/{IMAGE}.original.jpg"
    assert item.restored_thumbnail_key == f"thumbnails/{USER}/{IMAGE}.restored.jpg"
    assert {key: item.quality[key] for key in ("backend", "sharpness_before", "sharpness_after", "duration_ms")} == {
        "backend": "classical",
        "sharpness_before": 40.0,
        "sharpness_after": 100.0,
        "duration_ms": 321.5,
    }
    assert item.quality["sharpness_gain"] == pytest.approx(2.5)
    # The upload's facts survive the result.
    assert item.original_key == f"originals/{USER}/{IMAGE}.jpg"


async def test_restored_event_with_zero_sharpness_before_records_zero_gain(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded(IMAGE, USER))
    await project(events.restored(IMAGE, USER, sharpness_before=0.0, sharpness_after=80.0))

    item = await items.get(IMAGE)
    assert item is not None
    assert item.quality["sharpness_gain"] == 0.0


async def test_processing_after_restored_does_not_move_the_item_back(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded(IMAGE, USER))
    await project(events.restored(IMAGE, USER))
    await project(events.processing(IMAGE, USER))

    item = await items.get(IMAGE)
    assert item is not None
    assert item.status == "done"
    assert item.restored_key == f"restored/{USER}/{IMAGE}.png"


async def test_upload_arriving_after_the_result_fills_in_facts_but_keeps_done(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.restored(IMAGE, USER))
    await project(events.processing(IMAGE, USER))
    # Before the upload event the item has no place in the history yet.
    assert await items.get(IMAGE) is None

    await project(events.uploaded(IMAGE, USER, tags=("late",), note="arrived last"))

    item = await items.get(IMAGE)
    assert item is not None
    assert item.status == "done"
    assert item.tags == ["late"]
    assert item.note == "arrived last"
    assert item.original_key == f"originals/{USER}/{IMAGE}.jpg"
    assert item.restored_key == f"restored/{USER}/{IMAGE}.png"
    assert item.quality["sharpness_gain"] == pytest.approx(2.5)


async def test_the_same_events_applied_twice_change_nothing(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    sequence = [
        events.uploaded(IMAGE, USER, tags=("a",)),
        events.processing(IMAGE, USER),
        events.restored(IMAGE, USER, faces=3),
    ]
    for envelope in sequence:
        await project(envelope)
    once = await items.get(IMAGE)

    for envelope in sequence:
        await project(envelope)
    twice = await items.get(IMAGE)

    assert once is not None
    assert twice == once
    listed, _ = await items.list(10, "", USER)
    assert [item.id for item in listed] == [IMAGE]


async def test_a_repeated_upload_event_does_not_reset_a_processing_item(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    upload = events.uploaded(IMAGE, USER)
    await project(upload)
    await project(events.processing(IMAGE, USER))
    await project(upload)

    item = await items.get(IMAGE)
    assert item is not None
    assert item.status == "processing"


async def test_failed_event_marks_the_item_failed_with_the_reason(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded(IMAGE, USER))
    await project(events.processing(IMAGE, USER))
    await project(events.failed(IMAGE, USER, reason="undecodable", detail="not an image"))

    item = await items.get(IMAGE)
    assert item is not None
    assert item.status == "failed"
    assert item.error == "undecodable"
    assert item.restored_key == ""


async def test_a_finished_item_is_not_overwritten_by_a_later_failure(
    project: HistoryProjector, items: ItemRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded(IMAGE, USER))
    await project(events.restored(IMAGE, USER))
    await project(events.failed(IMAGE, USER, reason="storage_unavailable"))

    item = await items.get(IMAGE)
    assert item is not None
    assert item.status == "done"
    assert item.error == ""


async def test_result_for_an_image_deleted_meanwhile_is_removed_and_the_image_stays_deleted(
    project: HistoryProjector,
    history: History,
    items: ItemRepository,
    blobs: BlobStore,
    events: SimpleNamespace,
) -> None:
    upload = events.uploaded(IMAGE, USER)
    await blobs.put(upload.image_uploaded.original_key, b"original", "image/jpeg")
    await project(upload)
    await project(events.processing(IMAGE, USER))
    await history.delete(IMAGE, owner_id=USER, deleted_by="user")
    assert not await blobs.exists(upload.image_uploaded.original_key)

    # The inference service finishes after the delete: it has written its results already.
    result = events.restored(IMAGE, USER)
    result_keys = [
        result.image_restored.restored_key,
        result.image_restored.original_thumbnail_key,
        result.image_restored.restored_thumbnail_key,
    ]
    for key in result_keys:
        await blobs.put(key, b"late result", "image/jpeg")
    assert all([await blobs.exists(key) for key in result_keys])

    await project(result)

    for key in result_keys:
        assert not await blobs.exists(key), key
    assert await items.get(IMAGE) is None
    assert await items.is_deleted(IMAGE)
    listed, _ = await items.list(10, "", USER)
    assert listed == []
    with pytest.raises(NotFound):
        await history.get_own(USER, IMAGE)
    assert (await items.stats())["images_total"] == 0


async def test_a_late_upload_event_does_not_bring_a_deleted_image_back(
    project: HistoryProjector, history: History, items: ItemRepository, events: SimpleNamespace
) -> None:
    upload = events.uploaded(IMAGE, USER)
    await project(upload)
    await history.delete(IMAGE, owner_id=USER, deleted_by="user")

    await project(upload)
    await project(events.processing(IMAGE, USER))

    assert await items.get(IMAGE) is None
    listed, _ = await items.list(10, "", USER)
    assert listed == []


async def test_restored_faces_are_indexed_with_their_model_and_removed_with_the_image(
    project: HistoryProjector, history: History, faces: FaceRepository, events: SimpleNamespace
) -> None:
    await project(events.uploaded(IMAGE, USER))
    restored = events.restored(IMAGE, USER, faces=2)
    restored.image_restored.analyzer_model = "dlib-resnet-v1"
    restored.image_restored.identity_min = 0.91
    for index in range(2):
        restored.image_restored.face_details.add(
            box=[10 * index, 0, 10 * index + 50, 60],
            detection_score=0.9,
            embedding=[0.6, 0.8],
            identity_similarity=0.95,
        )
    await project(restored)
    await project(restored)  # redelivered: still two faces, not four

    stored = await faces.of_image(IMAGE)
    assert [face["model"] for face in stored] == ["dlib-resnet-v1", "dlib-resnet-v1"]
    assert stored[1]["box"] == [10, 0, 60, 60] and stored[0]["embedding"] == pytest.approx([0.6, 0.8])
    item = await history.items.get(IMAGE)
    assert item is not None and item.quality["identity_min"] == pytest.approx(0.91)

    await history.delete(IMAGE, owner_id=USER, deleted_by="user")
    assert await faces.of_image(IMAGE) == []


# --- the face index, a read model of the faces ----------------------------------------------------

MODEL = "dlib-resnet-v1"


def vectors(count: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(count, 128))
    return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).tolist()


def with_faces(envelope: events_pb2.Envelope, embeddings: list[list[float]]) -> events_pb2.Envelope:
    restored = envelope.image_restored
    restored.analyzer_model = MODEL
    restored.faces = len(embeddings)
    for index, embedding in enumerate(embeddings):
        restored.face_details.add(box=[100 * index, 10, 100 * index + 80, 90], detection_score=0.9, embedding=embedding)
    return envelope


async def indexed(
    face_index: FaceIndex, vector: list[float], user: str | None = USER, **filters: object
) -> list[FaceHit]:
    return await face_index.search(vector, MODEL, 10, SearchFilters(**filters), user)  # type: ignore[arg-type]


async def test_restored_faces_are_indexed_with_the_uploads_date_tags_and_location_once(
    project: HistoryProjector, face_index: FaceIndex, events: SimpleNamespace
) -> None:
    embeddings = vectors(2, seed=1)
    await project(events.uploaded(IMAGE, USER, created_at_ms=1_700_000_123_456, tags=("family",), location="Oslo"))
    result = with_faces(events.restored(IMAGE, USER), embeddings)
    await project(result)
    await project(result)  # redelivered

    assert await face_index.count(MODEL) == 2
    hits = await indexed(
        face_index, embeddings[1], location="Oslo", tags=("family",), created_from_ms=1_700_000_123_456
    )
    assert [(hit.image_id, hit.face_index) for hit in hits] == [(IMAGE, 1), (IMAGE, 0)]
    assert hits[0].box == (100, 10, 180, 90)
    assert hits[0].cosine == pytest.approx(1.0, abs=1e-5)
    assert await indexed(face_index, embeddings[1], created_from_ms=1_700_000_123_457) == []
    assert await indexed(face_index, embeddings[1], user="someone-else") == []


async def test_faces_of_a_result_that_came_before_its_upload_are_indexed_when_the_upload_arrives(
    project: HistoryProjector, face_index: FaceIndex, events: SimpleNamespace
) -> None:
    embeddings = vectors(1, seed=2)
    await project(with_faces(events.restored(IMAGE, USER), embeddings))
    # Not in the history yet, so not searchable either.
    assert await face_index.count() == 0

    await project(events.uploaded(IMAGE, USER, created_at_ms=1_700_000_000_999, tags=("late",), location="Rome"))

    hits = await indexed(face_index, embeddings[0], tags=("late",), location="Rome", created_to_ms=1_700_000_000_999)
    assert [hit.image_id for hit in hits] == [IMAGE]


async def test_deleting_an_image_removes_its_faces_from_the_index_at_once(
    project: HistoryProjector, history: History, faces: FaceRepository, face_index: FaceIndex, events: SimpleNamespace
) -> None:
    embeddings = vectors(1, seed=3)
    await project(events.uploaded(IMAGE, USER))
    await project(with_faces(events.restored(IMAGE, USER), embeddings))
    assert len(await indexed(face_index, embeddings[0])) == 1

    await history.delete(IMAGE, owner_id=USER, deleted_by="user")

    assert await indexed(face_index, embeddings[0]) == []
    assert await faces.of_image(IMAGE) == []


async def test_an_image_deleted_event_removes_faces_that_were_left_behind(
    project: HistoryProjector, faces: FaceRepository, face_index: FaceIndex, events: SimpleNamespace
) -> None:
    # As if another replica indexed the result after this one's delete had cleaned up.
    embeddings = vectors(1, seed=4)
    await project(events.uploaded(IMAGE, USER))
    await project(with_faces(events.restored(IMAGE, USER), embeddings))

    deleted = new_envelope("history", image_deleted=events_pb2.ImageDeleted(image_id=IMAGE, user_id=USER))
    await project(deleted)
    await project(deleted)

    assert await indexed(face_index, embeddings[0]) == []
    assert await faces.of_image(IMAGE) == []


async def test_a_deleted_user_loses_every_face_and_nobody_else_does(
    project: HistoryProjector, faces: FaceRepository, face_index: FaceIndex, events: SimpleNamespace
) -> None:
    embeddings = vectors(3, seed=5)
    for n, (image_id, user_id) in enumerate([("a1", "alice"), ("a2", "alice"), ("b1", "bob")]):
        await project(events.uploaded(image_id, user_id))
        await project(with_faces(events.restored(image_id, user_id), [embeddings[n]]))

    erased = new_envelope("auth", user_deleted=events_pb2.UserDeleted(user_id="alice"))
    await project(erased)
    await project(erased)

    assert await faces.of_image("a1") == [] and await faces.of_image("a2") == []
    assert [doc["user_id"] for doc in await faces.of_image("b1")] == ["bob"]
    assert {hit.image_id for hit in await indexed(face_index, embeddings[0], user=None)} == {"b1"}
    assert await face_index.count() == 1
