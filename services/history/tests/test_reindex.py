"""`reindex`: the face index rebuilt from MongoDB's faces (what the index holds of images
that are gone disappears), and `reindex --re-embed`: every restored original embedded again
through the embed request/reply, its stored faces replaced by the new model's, then indexed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from facerestore_common.storage import BlobStore
from history_service.cli import reindex
from history_service.consumer import HistoryProjector
from history_service.face_index import IndexedFace, SearchFilters
from history_service.face_index.edge import EdgeFaceIndex
from history_service.faces import FaceRepository
from history_service.items import ItemRepository
from history_service.settings import Settings

OLD_MODEL = "old-analyser-v0"
DLIB = "dlib-resnet-v1"


def unit_vectors(count: int, dimension: int, seed: int) -> list[list[float]]:
    raw = np.random.default_rng(seed).normal(size=(count, dimension))
    return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).tolist()


async def add_done(
    project: HistoryProjector, events: SimpleNamespace, image_id: str, user_id: str, model: str, vectors: list
) -> None:
    await project(events.uploaded(image_id, user_id, tags=("family",), location="Oslo"))
    result = events.restored(image_id, user_id, faces=len(vectors))
    result.image_restored.analyzer_model = model
    for index, vector in enumerate(vectors):
        result.image_restored.face_details.add(
            box=[index * 50, 0, index * 50 + 40, 40], detection_score=0.9, embedding=vector, identity_similarity=0.93
        )
    await project(result)


def cli_environment(mongo_url: str, unique_name: str, index_path: Path) -> dict[str, str]:
    return {"MONGO_URL": mongo_url, "MONGO_DATABASE": unique_name, "FACE_INDEX_PATH": str(index_path)}


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "history_service.cli",
        *args,
        env={**os.environ, **env, "QDRANT_URL": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_reindex_rebuilds_the_index_from_the_stored_faces_and_forgets_what_is_gone(
    project: HistoryProjector,
    events: SimpleNamespace,
    face_index: EdgeFaceIndex,
    mongo_url: str,
    unique_name: str,
    tmp_path: Path,
) -> None:
    vectors = unit_vectors(3, 128, seed=1)
    await add_done(project, events, "img-a", "alice", DLIB, vectors[:2])
    await add_done(project, events, "img-b", "bob", DLIB, vectors[2:])
    # A face the index kept of an image MongoDB no longer has (a lost delete).
    await face_index.replace_image("ghost", [IndexedFace("ghost", 0, "alice", DLIB, vectors[0], 1)])
    env = cli_environment(mongo_url, unique_name, tmp_path / "face-index")

    # The service holds the embedded index: reindex refuses and says why.
    code, _, err = await run_cli(env, "reindex")
    assert code == 2 and "stop the history service first" in err

    await face_index.close()
    code, out, err = await run_cli(env, "reindex")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["faces_indexed"] == 3

    rebuilt = EdgeFaceIndex(tmp_path / "face-index", background_optimize=False)
    await rebuilt.open()
    try:
        assert await rebuilt.count() == 3
        hits = await rebuilt.search(vectors[0], DLIB, 10, SearchFilters(tags=("family",), location="Oslo"), "alice")
        assert [(hit.image_id, hit.face_index) for hit in hits] == [("img-a", 0), ("img-a", 1)]
        assert hits[0].cosine == pytest.approx(1.0, abs=1e-5)
        assert [hit.image_id for hit in await rebuilt.search(vectors[2], DLIB, 10, SearchFilters(), "bob")] == ["img-b"]
    finally:
        await rebuilt.close()


async def test_re_embed_replaces_the_old_models_faces_with_the_embedders_and_indexes_them(
    project: HistoryProjector,
    events: SimpleNamespace,
    face_index: EdgeFaceIndex,
    faces: FaceRepository,
    items: ItemRepository,
    blobs: BlobStore,
    start_responder: Callable[..., Any],
    dlib_faces: Any,
    photo_bytes: Callable[[str], bytes],
    mongo_url: str,
    s3_endpoint: str,
    amqp_url: str,
    unique_name: str,
    tmp_path: Path,
) -> None:
    group = cv2.imdecode(np.frombuffer(photo_bytes("t1.jpg"), dtype=np.uint8), cv2.IMREAD_COLOR)
    portrait = cv2.imencode(".jpg", group[230:470, 385:625])[1].tobytes()
    # Stored by an analyser that is no longer deployed: 64-d vectors of another model.
    await add_done(project, events, "img-1", "alice", OLD_MODEL, unit_vectors(1, 64, seed=2))
    await add_done(project, events, "no-original", "alice", OLD_MODEL, unit_vectors(1, 64, seed=3))
    item = await items.get("img-1")
    assert item is not None
    await blobs.put(item.original_key, portrait, "image/jpeg")
    responder = await start_responder(dlib_faces.answer)
    await face_index.close()

    settings = Settings(
        mongo_url=mongo_url,
        mongo_database=unique_name,
        face_index_path=tmp_path / "face-index",
        qdrant_url="",
        queue_prefix=unique_name,
        amqp_url=amqp_url,
        s3_endpoint=s3_endpoint,
        s3_bucket=f"h-{unique_name}",
    )
    report = await reindex(settings, re_embed=True)

    assert (report["images_embedded"], report["images_failed"], report["models"]) == (1, 1, (DLIB,))
    assert [request.image for request in responder.requests] == [portrait]
    (stored,) = await faces.of_image("img-1")
    assert stored["model"] == DLIB and len(stored["embedding"]) == 128
    assert stored["identity_similarity"] == pytest.approx(0.93)  # the same single face: kept
    reopened = EdgeFaceIndex(tmp_path / "face-index", background_optimize=False)
    await reopened.open()
    try:
        assert (await reopened.count(DLIB), await reopened.count(OLD_MODEL)) == (1, 1)
        query = dlib_faces.detect(cv2.imencode(".jpg", cv2.flip(group[230:470, 385:625], 1))[1].tobytes())
        hits = await reopened.search(query[0].embedding.tolist(), DLIB, 5, SearchFilters(location="Oslo"), "alice")
        assert [hit.image_id for hit in hits] == ["img-1"] and hits[0].cosine > 0.95
    finally:
        await reopened.close()
