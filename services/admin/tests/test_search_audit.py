"""What the audit log keeps of an admin's search across every user's faces, over a real Mongo
database: who searched, with what (a stored face, or a photo whose bytes are never kept) and
which filters; and that such searches are not counted as moderation actions."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from admin_service.audit import AuditLog
from admin_service.grpc_api import FACE_SEARCH_ACTION, search_details, search_target
from facerestore.history.v1 import history_pb2
from facerestore_common import mongo


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    db.client.close()


@pytest.fixture
async def audit(database: AsyncIOMotorDatabase) -> AuditLog:
    log = AuditLog(database)
    await log.create_indexes()
    return log


def group_photo() -> bytes:
    """A real photo from the insightface wheel (test data only)."""
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None, "insightface (test data) is not installed"
    return (Path(spec.origin).parent / "data" / "images" / "t1.jpg").read_bytes()


def photo_search() -> history_pb2.SearchFacesRequest:
    search = history_pb2.SearchFacesRequest(image=group_photo(), top_k=5, min_score=0.7)
    search.query_face = 2
    search.filters.tags.extend(["family", "beach"])
    search.filters.location = "Lisbon"
    search.filters.created_from.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    return search


async def test_a_photo_search_is_recorded_with_its_filters_and_without_the_photo(
    audit: AuditLog, database: AsyncIOMotorDatabase
) -> None:
    search = photo_search()
    await audit.record("admin-1", FACE_SEARCH_ACTION, search_target(search), **search_details(search))

    entry = await database["audit_log"].find_one({"action": FACE_SEARCH_ACTION})
    assert entry is not None
    assert (entry["actor_id"], entry["target"]) == ("admin-1", "photo")
    assert entry["details"] == {
        "top_k": 5,
        "min_score": 0.7,
        "tags": ["family", "beach"],
        "location": "Lisbon",
        "created_from": "2026-01-01T00:00:00Z",
        "created_to": "",
        "photo_bytes": len(search.image),
        "query_face": 2,
    }
    stored = await database["audit_log"].find({}).to_list(None)
    assert not any(isinstance(value, bytes) for entry in stored for value in entry["details"].values())


async def test_a_search_by_stored_face_names_that_face(audit: AuditLog, database: AsyncIOMotorDatabase) -> None:
    search = history_pb2.SearchFacesRequest(face=history_pb2.FaceRef(image_id="img-9", face_index=3))
    await audit.record("admin-2", FACE_SEARCH_ACTION, search_target(search), **search_details(search))

    entry = await database["audit_log"].find_one({"actor_id": "admin-2"})
    assert entry is not None
    assert entry["target"] == "image:img-9#3"
    assert "photo_bytes" not in entry["details"]
    assert entry["details"]["tags"] == []


async def test_searches_are_not_counted_as_moderation_actions(audit: AuditLog) -> None:
    await audit.record("admin-1", "image.delete", "img-1", reason="spam")
    await audit.record("admin-1", FACE_SEARCH_ACTION, "photo")
    await audit.record("admin-1", FACE_SEARCH_ACTION, "photo")

    assert await audit.count() == 3
    assert await audit.count(excluding=(FACE_SEARCH_ACTION,)) == 1
