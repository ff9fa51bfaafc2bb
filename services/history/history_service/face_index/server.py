"""The face index on a Qdrant server (QDRANT_URL), through qdrant-client's AsyncQdrantClient:
one collection per analyser model, named <collection>-<model>. The server optimizes and
indexes in the background, so writes return once applied (wait=True) and optimize() is a
no-op. Several history replicas may share the server: collection creation tolerates a
replica that got there first."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from facerestore_common.logging import get_logger
from history_service.face_index.base import (
    CREATED_AT,
    IMAGE_ID,
    LOCATION,
    MODEL,
    TAGS,
    USER_ID,
    FaceHit,
    FaceIndex,
    IndexedFace,
    SearchFilters,
    collection_for,
    point_id,
)
from history_service.face_index.tuning import DEFAULT_TUNING, EngineTuning

log = get_logger(__name__)


class QdrantServerFaceIndex(FaceIndex):
    def __init__(
        self, client: AsyncQdrantClient, collection: str = "faces", tuning: EngineTuning = DEFAULT_TUNING
    ) -> None:
        self._client = client
        self._prefix = collection
        self._tuning = tuning
        self._collections: set[str] = set()
        self._create_lock = asyncio.Lock()

    @classmethod
    def connect(
        cls, url: str, api_key: str | None, collection: str = "faces", tuning: EngineTuning = DEFAULT_TUNING
    ) -> QdrantServerFaceIndex:
        return cls(AsyncQdrantClient(url=url, api_key=api_key or None), collection, tuning)

    async def open(self) -> None:
        await self._refresh()
        log.info("face_index_open", engine="qdrant-server", collections=sorted(self._collections))

    async def close(self) -> None:
        await self._client.close()

    async def _refresh(self) -> set[str]:
        response = await self._client.get_collections()
        self._collections = {c.name for c in response.collections if c.name.startswith(f"{self._prefix}-")}
        return self._collections

    async def _ensure(self, model: str, dimension: int) -> str:
        name = collection_for(self._prefix, model)
        if name in self._collections:
            return name
        async with self._create_lock:
            if name in self._collections or name in await self._refresh():
                return name
            try:
                await self._create(name, dimension)
            except Exception:
                # Another replica may have created it meanwhile; anything else is a real error.
                if not await self._client.collection_exists(name):
                    raise
            self._collections.add(name)
            log.info("face_index_collection_created", collection=name, model=model, dimension=dimension)
        return name

    async def _create(self, name: str, dimension: int) -> None:
        tuning = self._tuning
        await self._client.create_collection(
            name,
            vectors_config=qm.VectorParams(size=dimension, distance=qm.Distance.COSINE),
            hnsw_config=qm.HnswConfigDiff(
                m=tuning.m,
                ef_construct=tuning.ef_construct,
                full_scan_threshold=tuning.full_scan_threshold_kb,
                payload_m=tuning.payload_m,
            ),
            optimizers_config=qm.OptimizersConfigDiff(
                indexing_threshold=tuning.indexing_threshold_kb, max_segment_size=tuning.max_segment_size_kb
            ),
            quantization_config=qm.ScalarQuantization(
                scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)
            )
            if tuning.quantization == "int8"
            else None,
        )
        keyword = qm.KeywordIndexType.KEYWORD
        indexes: list[tuple[str, Any]] = [
            (
                USER_ID,
                qm.KeywordIndexParams(
                    type=keyword, is_tenant=tuning.user_id_is_tenant, enable_hnsw=tuning.user_id_hnsw
                ),
            ),
            (IMAGE_ID, qm.KeywordIndexParams(type=keyword, enable_hnsw=False)),
            (MODEL, qm.KeywordIndexParams(type=keyword, enable_hnsw=False)),
            (
                CREATED_AT,
                qm.IntegerIndexParams(type=qm.IntegerIndexType.INTEGER, lookup=False, range=True, enable_hnsw=False),
            ),
            (LOCATION, qm.KeywordIndexParams(type=keyword, enable_hnsw=False)),
            (TAGS, qm.KeywordIndexParams(type=keyword, enable_hnsw=False)),
        ]
        for field, schema in indexes:
            await self._client.create_payload_index(name, field, field_schema=schema, wait=True)

    async def _upsert_points(self, faces: Sequence[IndexedFace]) -> dict[str, list[str]]:
        by_collection: dict[str, list[qm.PointStruct]] = {}
        for face in faces:
            name = await self._ensure(face.model, len(face.vector))
            by_collection.setdefault(name, []).append(
                qm.PointStruct(id=face.point_id, vector=list(face.vector), payload=face.payload())
            )
        for name, points in by_collection.items():
            for start in range(0, len(points), self._tuning.upsert_batch):
                await self._client.upsert(name, points[start : start + self._tuning.upsert_batch], wait=True)
        return {name: [str(point.id) for point in points] for name, points in by_collection.items()}

    async def replace_image(self, image_id: str, faces: Sequence[IndexedFace]) -> None:
        if any(face.image_id != image_id for face in faces):
            raise ValueError(f"a face of another image given for {image_id}")
        kept = await self._upsert_points(faces)
        for name in await self._refresh():
            keep = kept.get(name, [])
            must_not: list[Any] = [qm.HasIdCondition(has_id=list(keep))] if keep else []
            condition = qm.Filter(
                must=[qm.FieldCondition(key=IMAGE_ID, match=qm.MatchValue(value=image_id))], must_not=must_not
            )
            await self._client.delete(name, qm.FilterSelector(filter=condition), wait=True)

    async def upsert(self, faces: Sequence[IndexedFace]) -> None:
        await self._upsert_points(faces)

    async def _delete_where(self, condition: qm.Filter) -> None:
        for name in await self._refresh():
            await self._client.delete(name, qm.FilterSelector(filter=condition), wait=True)

    async def delete_image(self, image_id: str) -> None:
        await self._delete_where(qm.Filter(must=[qm.FieldCondition(key=IMAGE_ID, match=qm.MatchValue(value=image_id))]))

    async def delete_user(self, user_id: str) -> None:
        await self._delete_where(qm.Filter(must=[qm.FieldCondition(key=USER_ID, match=qm.MatchValue(value=user_id))]))

    async def drop_all(self) -> None:
        for name in await self._refresh():
            await self._client.delete_collection(name)
        self._collections = set()

    async def search(
        self,
        vector: Sequence[float],
        model: str,
        top_k: int,
        filters: SearchFilters,
        user_id: str | None,
        *,
        min_cosine: float | None = None,
        exclude: Sequence[tuple[str, int]] = (),
    ) -> list[FaceHit]:
        name = collection_for(self._prefix, model)
        if name not in self._collections and name not in await self._refresh():
            return []
        condition = _filter(filters, user_id, exclude)

        async def query(params: qm.SearchParams) -> list[qm.ScoredPoint]:
            response = await self._client.query_points(
                name,
                query=list(vector),
                query_filter=condition,
                search_params=params,
                limit=top_k,
                with_payload=True,
                score_threshold=min_cosine,
            )
            return response.points

        points = await query(self._graph_params())
        if condition is not None and len(points) < top_k:
            if await self._walk_stopped_short(name, condition, len(points), len(vector)):
                points = await query(qm.SearchParams(exact=True))
        return [FaceHit.from_payload(point.payload or {}, point.score) for point in points]

    async def _walk_stopped_short(self, name: str, condition: qm.Filter, found: int, dimension: int) -> bool:
        # One more round trip, for short answers only.
        expected = (await self._client.count(name, count_filter=condition, exact=False)).count
        return self._tuning.scan_after_short_walk(found, expected, dimension)

    def _graph_params(self) -> qm.SearchParams:
        return qm.SearchParams(
            hnsw_ef=self._tuning.hnsw_ef,
            quantization=qm.QuantizationSearchParams(rescore=True, oversampling=self._tuning.quantization_oversampling)
            if self._tuning.quantization != "none"
            else None,
        )

    async def count(self, model: str | None = None) -> int:
        collections = await self._refresh()
        names = collections if model is None else collections & {collection_for(self._prefix, model)}
        total = 0
        for name in names:
            total += (await self._client.count(name, exact=True)).count
        return total


def _filter(filters: SearchFilters, user_id: str | None, exclude: Sequence[tuple[str, int]]) -> qm.Filter | None:
    must: list[Any] = []
    if user_id is not None:
        must.append(qm.FieldCondition(key=USER_ID, match=qm.MatchValue(value=user_id)))
    if filters.created_from_ms is not None or filters.created_to_ms is not None:
        bounds = qm.Range(gte=filters.created_from_ms, lte=filters.created_to_ms)
        must.append(qm.FieldCondition(key=CREATED_AT, range=bounds))
    if filters.location:
        must.append(qm.FieldCondition(key=LOCATION, match=qm.MatchValue(value=filters.location)))
    if filters.tags:
        must.append(qm.FieldCondition(key=TAGS, match=qm.MatchAny(any=list(filters.tags))))
    must_not: list[Any] = [qm.HasIdCondition(has_id=[point_id(i, f) for i, f in exclude])] if exclude else []
    if not must and not must_not:
        return None
    return qm.Filter(must=must, must_not=must_not)
