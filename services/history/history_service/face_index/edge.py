"""The face index in-process: Qdrant Edge (`qdrant-edge-py`, module `qdrant_edge`), one
EdgeShard per analyser model under FACE_INDEX_PATH/<collection>-<model>/, persisted by the
engine (write-ahead log and segments) and reopened on start.

Edge calls are native and hold the interpreter lock while they run (measured: no other
thread of the process runs meanwhile), so they go through one worker thread at a time and
are kept short: writes in batches of `upsert_batch` points, searches in milliseconds. The
expensive call is optimize(), which builds the HNSW graph: Edge has no background optimizer,
and 20,000 512-d faces took ~54 s here, the whole process paused. So the live service leaves
new faces in the appendable segment, where they are searched exactly (per user through the
payload index: ~0.1 ms; unfiltered ~2 ms per 10,000 512-d faces), and optimizes only once
`optimize_unindexed_points` of them wait (where exact unfiltered search nears 20 ms) and the
index has been idle for `optimize_quiet_seconds`; `reindex` optimizes at its end. Only one
process can open the index: a second one (the reindex CLI while the service runs) gets
FaceIndexBusy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

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
    FaceIndexBusy,
    IndexedFace,
    SearchFilters,
    collection_for,
    point_id,
)
from history_service.face_index.tuning import DEFAULT_TUNING, EngineTuning

log = get_logger(__name__)

T = TypeVar("T")
_META_FILE = "face_index.json"


class _Shard:
    def __init__(self, name: str, model: str, dimension: int, shard: qe.EdgeShard) -> None:
        self.name = name
        self.model = model
        self.dimension = dimension
        self.shard = shard
        # Points not in the HNSW graph after the last optimize(): only growth beyond it counts.
        self.unindexed_after_optimize = 0


def _unindexed(shard: qe.EdgeShard) -> int:
    info = shard.info()
    return max(0, info.points_count - info.indexed_vectors_count)


class EdgeFaceIndex(FaceIndex):
    def __init__(
        self,
        path: Path | str,
        collection: str = "faces",
        tuning: EngineTuning = DEFAULT_TUNING,
        *,
        background_optimize: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` measures how long the index has been idle (a test moves one by hand)."""
        self._root = Path(path)
        self._prefix = collection
        self._tuning = tuning
        self._background_optimize = background_optimize
        self._shards: dict[str, _Shard] = {}
        self._engine_lock = threading.Lock()
        self._create_lock = asyncio.Lock()
        self._optimizer: asyncio.Task[None] | None = None
        self._clock = clock
        self._last_activity = clock()

    # -- engine plumbing ---------------------------------------------------------------

    def _locked(self, call: Callable[..., T], *args: Any) -> T:
        with self._engine_lock:
            return call(*args)

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._locked, call, *args)

    def _config(self, dimension: int) -> qe.EdgeConfig:
        tuning = self._tuning
        quantization = (
            qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
            if tuning.quantization == "int8"
            else None
        )
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=tuning.m,
                ef_construct=tuning.ef_construct,
                full_scan_threshold=tuning.full_scan_threshold_kb,
                payload_m=tuning.payload_m,
            ),
            quantization_config=quantization,
            optimizers=qe.EdgeOptimizersConfig(
                indexing_threshold=tuning.indexing_threshold_kb, max_segment_size=tuning.max_segment_size_kb
            ),
        )

    def _payload_indexes(self) -> list[tuple[str, Any]]:
        tuning = self._tuning
        user_id = qe.KeywordIndexParams(is_tenant=tuning.user_id_is_tenant, enable_hnsw=tuning.user_id_hnsw)
        return [
            (USER_ID, user_id),
            (IMAGE_ID, qe.KeywordIndexParams(enable_hnsw=False)),
            (MODEL, qe.KeywordIndexParams(enable_hnsw=False)),
            (CREATED_AT, qe.IntegerIndexParams(lookup=False, range=True, enable_hnsw=False)),
            (LOCATION, qe.KeywordIndexParams(enable_hnsw=False)),
            (TAGS, qe.KeywordIndexParams(enable_hnsw=False)),
        ]

    def _load(self, directory: Path) -> _Shard:
        meta = json.loads((directory / _META_FILE).read_text())
        try:
            # Passing the config applies changed tuning (it is checked against the stored vectors).
            shard = qe.EdgeShard.load(str(directory), self._config(int(meta["dimension"])))
        except Exception as error:
            if "WouldBlock" in str(error):
                raise FaceIndexBusy(
                    f"the face index at {directory} is open in another process (the history service?)"
                ) from error
            raise
        return _Shard(directory.name, str(meta["model"]), int(meta["dimension"]), shard)

    def _create(self, model: str, dimension: int) -> _Shard:
        name = collection_for(self._prefix, model)
        directory = self._root / name
        shard = qe.EdgeShard.create(str(directory), self._config(dimension))
        for field, params in self._payload_indexes():
            shard.update(qe.UpdateOperation.create_field_index(field, params))
        shard.flush()
        # Written last: a directory without it is a creation that did not finish.
        (directory / _META_FILE).write_text(json.dumps({"model": model, "dimension": dimension}))
        return _Shard(name, model, dimension, shard)

    async def _shard_for(self, model: str, dimension: int) -> _Shard:
        name = collection_for(self._prefix, model)
        if name in self._shards:
            return self._shards[name]
        async with self._create_lock:
            if name not in self._shards:
                directory = self._root / name
                if directory.exists() and not (directory / _META_FILE).exists():
                    shutil.rmtree(directory)
                self._shards[name] = await self._run(self._create, model, dimension)
                log.info("face_index_collection_created", collection=name, model=model, dimension=dimension)
            return self._shards[name]

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        for directory in sorted(self._root.glob(f"{self._prefix}-*")):
            if (directory / _META_FILE).exists():
                shard = await self._run(self._load, directory)
                self._shards[shard.name] = shard
        if self._background_optimize:
            self._optimizer = asyncio.create_task(self._optimize_when_due())
        log.info("face_index_open", engine="qdrant-edge", path=str(self._root), collections=sorted(self._shards))

    async def close(self) -> None:
        if self._optimizer is not None:
            self._optimizer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._optimizer
            self._optimizer = None
        shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            await self._run(shard.shard.flush)
            await self._run(shard.shard.close)

    # -- writes ------------------------------------------------------------------------

    def _by_image(self, image_id: str, keep: Sequence[str] = ()) -> qe.Filter:
        must_not: list[Any] = [qe.HasIdCondition(set(keep))] if keep else []
        return qe.Filter(must=[qe.FieldCondition(key=IMAGE_ID, match=qe.MatchValue(image_id))], must_not=must_not)

    async def replace_image(self, image_id: str, faces: Sequence[IndexedFace]) -> None:
        self._last_activity = self._clock()
        kept: dict[str, list[str]] = {}
        for face in faces:
            if face.image_id != image_id:
                raise ValueError(f"face of {face.image_id} given for {image_id}")
            shard = await self._shard_for(face.model, len(face.vector))
            kept.setdefault(shard.name, []).append(face.point_id)
        for start in range(0, len(faces), self._tuning.upsert_batch):
            batch = faces[start : start + self._tuning.upsert_batch]
            await self._upsert(batch)
        # Faces the image no longer has (fewer faces, or another model after a re-embed).
        for shard in list(self._shards.values()):
            remove = qe.UpdateOperation.delete_points_by_filter(self._by_image(image_id, kept.get(shard.name, ())))
            await self._run(shard.shard.update, remove)

    async def upsert(self, faces: Sequence[IndexedFace]) -> None:
        """Faces of any images, written as they are (reindex): no clean-up of other faces."""
        self._last_activity = self._clock()
        for face in faces:
            await self._shard_for(face.model, len(face.vector))
        for start in range(0, len(faces), self._tuning.upsert_batch):
            await self._upsert(faces[start : start + self._tuning.upsert_batch])

    async def _upsert(self, faces: Sequence[IndexedFace]) -> None:
        by_shard: dict[str, list[qe.Point]] = {}
        for face in faces:
            name = collection_for(self._prefix, face.model)
            by_shard.setdefault(name, []).append(qe.Point(face.point_id, list(face.vector), face.payload()))
        for name, points in by_shard.items():
            operation = qe.UpdateOperation.upsert_points(points)
            await self._run(self._shards[name].shard.update, operation)

    async def _delete_where(self, condition: qe.Filter) -> None:
        self._last_activity = self._clock()
        operation = qe.UpdateOperation.delete_points_by_filter(condition)
        for shard in list(self._shards.values()):
            await self._run(shard.shard.update, operation)

    async def delete_image(self, image_id: str) -> None:
        await self._delete_where(self._by_image(image_id))

    async def delete_user(self, user_id: str) -> None:
        await self._delete_where(qe.Filter(must=[qe.FieldCondition(key=USER_ID, match=qe.MatchValue(user_id))]))

    async def drop_all(self) -> None:
        await self.close()
        for directory in self._root.glob(f"{self._prefix}-*"):
            await asyncio.to_thread(shutil.rmtree, directory)
        await self.open()

    # -- reads -------------------------------------------------------------------------

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
        self._last_activity = self._clock()
        shard = self._shards.get(collection_for(self._prefix, model))
        if shard is None:
            return []
        points = await self._run(
            self._query, shard, list(vector), top_k, _filter(filters, user_id, exclude), min_cosine
        )
        return [FaceHit.from_payload(point.payload or {}, point.score) for point in points]

    def _query(
        self, shard: _Shard, vector: list[float], top_k: int, condition: qe.Filter | None, min_cosine: float | None
    ) -> list[qe.ScoredPoint]:
        def query(params: qe.SearchParams) -> list[qe.ScoredPoint]:
            request = qe.QueryRequest(
                limit=top_k,
                query=qe.Query.Nearest(vector),
                filter=condition,
                with_payload=True,
                score_threshold=min_cosine,
                params=params,
            )
            return shard.shard.query(request)

        points = query(self._graph_params())
        if condition is not None and len(points) < top_k and self._walk_stopped_short(shard, condition, len(points)):
            return query(qe.SearchParams(exact=True))
        return points

    def _walk_stopped_short(self, shard: _Shard, condition: qe.Filter, found: int) -> bool:
        expected = shard.shard.count(qe.CountRequest(exact=False, filter=condition))
        return self._tuning.scan_after_short_walk(found, expected, shard.dimension)

    def _graph_params(self) -> qe.SearchParams:
        return qe.SearchParams(
            hnsw_ef=self._tuning.hnsw_ef,
            quantization=qe.QuantizationSearchParams(rescore=True, oversampling=self._tuning.quantization_oversampling)
            if self._tuning.quantization != "none"
            else None,
        )

    async def count(self, model: str | None = None) -> int:
        names = list(self._shards) if model is None else [collection_for(self._prefix, model)]
        total = 0
        for name in names:
            shard = self._shards.get(name)
            if shard is not None:
                total += await self._run(shard.shard.count, qe.CountRequest(exact=True))
        return total

    def models(self) -> list[str]:
        return sorted(shard.model for shard in self._shards.values())

    # -- maintenance -------------------------------------------------------------------

    async def flush(self) -> None:
        for shard in list(self._shards.values()):
            await self._run(shard.shard.flush)

    async def optimize(self) -> None:
        for shard in list(self._shards.values()):
            await self._optimize(shard)

    async def _optimize(self, shard: _Shard) -> None:
        started = time.perf_counter()
        changed = await self._run(shard.shard.optimize)
        shard.unindexed_after_optimize = await self._run(_unindexed, shard.shard)
        log.info(
            "face_index_optimized",
            collection=shard.name,
            changed=changed,
            unindexed=shard.unindexed_after_optimize,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _optimize_when_due(self) -> None:
        tuning = self._tuning
        while True:
            await asyncio.sleep(tuning.optimize_check_seconds)
            if self._clock() - self._last_activity < tuning.optimize_quiet_seconds:
                continue
            for shard in list(self._shards.values()):
                try:
                    unindexed = await self._run(_unindexed, shard.shard)
                    if unindexed - shard.unindexed_after_optimize >= tuning.optimize_unindexed_points:
                        await self._optimize(shard)
                except Exception:
                    log.error("face_index_optimize_failed", collection=shard.name, exc_info=True)


def _filter(filters: SearchFilters, user_id: str | None, exclude: Sequence[tuple[str, int]]) -> qe.Filter | None:
    must: list[Any] = []
    if user_id is not None:
        must.append(qe.FieldCondition(key=USER_ID, match=qe.MatchValue(user_id)))
    if filters.created_from_ms is not None or filters.created_to_ms is not None:
        bounds = qe.RangeFloat(gte=filters.created_from_ms, lte=filters.created_to_ms)
        must.append(qe.FieldCondition(key=CREATED_AT, range=bounds))
    if filters.location:
        must.append(qe.FieldCondition(key=LOCATION, match=qe.MatchValue(filters.location)))
    if filters.tags:
        must.append(qe.FieldCondition(key=TAGS, match=qe.MatchAny(list(filters.tags))))
    must_not: list[Any] = [qe.HasIdCondition({point_id(image, index) for image, index in exclude})] if exclude else []
    if not must and not must_not:
        return None
    return qe.Filter(must=must, must_not=must_not)
