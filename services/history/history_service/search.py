"""Similar-face search, free of transport: a query photo (checked under the upload rules,
embedded by the inference side) or a face already in the history, compared with the stored
faces of the same analyser model, within the caller's own faces unless an admin asks for all.

Scores are the cosine similarity mapped to 0..1, (1 + cos) / 2. Matches are read back from
the history: a match whose image is gone, unfinished or not the caller's is dropped, so the
index may lag behind a deletion without ever showing it."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from facerestore_common.errors import InvalidArgument, NotFound, PermissionDenied, Unprocessable
from facerestore_common.images import ImageLimits, normalise
from facerestore_common.tokens import Principal
from history_service.embedding_client import EmbeddedFace, EmbeddingClient
from history_service.face_index import FaceHit, FaceIndex, SearchFilters
from history_service.faces import FaceRepository
from history_service.items import Item, ItemRepository

DEFAULT_TOP_K = 10
MAX_TOP_K = 50
# As many as an upload may carry.
MAX_FILTER_TAGS = 10
# Extra candidates asked of the index, so that dropped matches (images deleted meanwhile)
# rarely leave the answer short of top_k.
OVERFETCH = 10


@dataclass(frozen=True)
class SearchQuery:
    image: bytes = b""
    face: tuple[str, int] | None = None
    query_face: int | None = None
    top_k: int = 0
    min_score: float = 0.0
    filters: SearchFilters = field(default_factory=SearchFilters)
    all_users: bool = False


@dataclass(frozen=True)
class QueryFace:
    index: int
    box: tuple[int, ...]
    detection_score: float
    used: bool


@dataclass(frozen=True)
class Match:
    item: Item
    face_index: int
    box: tuple[int, ...]
    score: float


@dataclass(frozen=True)
class SearchResult:
    model: str
    query_faces: list[QueryFace]
    matches: list[Match]


def score_of(cosine: float) -> float:
    return min(1.0, max(0.0, (1.0 + cosine) / 2.0))


def _top_k(requested: int) -> int:
    if requested == 0:
        return DEFAULT_TOP_K
    if not 1 <= requested <= MAX_TOP_K:
        raise InvalidArgument(f"top_k is 1 to {MAX_TOP_K}", reason="invalid-argument")
    return requested


def _min_score(requested: float) -> float:
    if math.isnan(requested) or not 0.0 <= requested <= 1.0:
        raise InvalidArgument("min_score is 0 to 1", reason="invalid-argument")
    return requested


def clean_filters(filters: SearchFilters) -> SearchFilters:
    """Tags compared as uploads store them (trimmed, lower case), location trimmed."""
    if (
        filters.created_from_ms is not None
        and filters.created_to_ms is not None
        and filters.created_from_ms > filters.created_to_ms
    ):
        raise InvalidArgument("the creation time range ends before it starts", reason="invalid-argument")
    tags = tuple(dict.fromkeys(tag.strip().lower() for tag in filters.tags if tag.strip()))
    if len(tags) > MAX_FILTER_TAGS:
        raise InvalidArgument(f"at most {MAX_FILTER_TAGS} tags", reason="invalid-argument")
    location = (filters.location or "").strip() or None
    return SearchFilters(filters.created_from_ms, filters.created_to_ms, location, tags)


def choose_face(faces: tuple[EmbeddedFace, ...], requested: int | None) -> int:
    """The face to search with: the one asked for, else the largest (then the surest)."""
    if not faces:
        raise Unprocessable("no face was found in the photo", reason="no-face-found")
    if requested is not None:
        if not 0 <= requested < len(faces):
            raise Unprocessable(
                f"the photo has {len(faces)} face(s); query_face is 0 to {len(faces) - 1}",
                reason="query-face-not-found",
            )
        return requested
    return max(range(len(faces)), key=lambda i: (faces[i].area, faces[i].detection_score, -i))


class FaceSearch:
    def __init__(
        self,
        items: ItemRepository,
        faces: FaceRepository,
        index: FaceIndex,
        embedder: EmbeddingClient | None,
        limits: ImageLimits,
    ) -> None:
        self._items = items
        self._faces = faces
        self._index = index
        self._embedder = embedder
        self._limits = limits

    async def search(self, principal: Principal, query: SearchQuery) -> SearchResult:
        if query.all_users and not principal.is_admin:
            raise PermissionDenied("searching every user's faces needs the admin role", reason="forbidden")
        top_k = _top_k(query.top_k)
        min_score = _min_score(query.min_score)
        filters = clean_filters(query.filters)
        owner = None if query.all_users else principal.user_id
        exclude: list[tuple[str, int]] = []
        if query.face is not None:
            model, vector, query_faces = await self._stored_face(query.face, owner)
            # Searching "by example" answers other faces: the example itself is not a match.
            exclude.append(query.face)
        elif query.image:
            model, vector, query_faces = await self._photo_face(query.image, query.query_face)
        else:
            raise InvalidArgument("a search needs a photo or a face of the history", reason="invalid-argument")
        hits = await self._index.search(
            vector,
            model,
            top_k + OVERFETCH,
            filters,
            owner,
            min_cosine=2.0 * min_score - 1.0 if min_score > 0 else None,
            exclude=exclude,
        )
        matches = await self._matches(hits, owner)
        return SearchResult(model=model, query_faces=query_faces, matches=matches[:top_k])

    async def _stored_face(self, face: tuple[str, int], owner: str | None) -> tuple[str, list[float], list[QueryFace]]:
        image_id, face_index = face
        document = await self._faces.get(image_id, face_index)
        item = await self._items.get(image_id) if document is not None else None
        # Someone else's face is indistinguishable from a missing one.
        if document is None or item is None or (owner is not None and item.user_id != owner):
            raise NotFound("no such face", reason="face-not-found")
        used = QueryFace(
            index=face_index,
            box=tuple(int(v) for v in document.get("box", ())),
            detection_score=float(document.get("detection_score", 0.0)),
            used=True,
        )
        return str(document["model"]), [float(v) for v in document["embedding"]], [used]

    async def _photo_face(self, image: bytes, requested: int | None) -> tuple[str, list[float], list[QueryFace]]:
        if self._embedder is None:
            raise RuntimeError("searching by photo needs an embedding client")
        # Decoding and re-encoding is CPU work: off the event loop.
        normalised = await asyncio.to_thread(normalise, image, self._limits)
        embedding = await self._embedder.embed(normalised.content)
        # Numbered left to right (then top to bottom), so that query_face reads naturally.
        faces = tuple(sorted(embedding.faces, key=lambda face: face.box[:2]))
        chosen = choose_face(faces, requested)
        query_faces = [
            QueryFace(index=i, box=face.box, detection_score=face.detection_score, used=i == chosen)
            for i, face in enumerate(faces)
        ]
        return embedding.model, list(faces[chosen].embedding), query_faces

    async def _matches(self, hits: list[FaceHit], owner: str | None) -> list[Match]:
        items = await self._items.get_many(hit.image_id for hit in hits)
        matches = []
        for hit in hits:
            item = items.get(hit.image_id)
            if item is None or item.status != "done" or (owner is not None and item.user_id != owner):
                continue
            if item.under_review:  # hidden by an admin pending review: found by nobody
                continue
            matches.append(Match(item=item, face_index=hit.face_index, box=hit.box, score=score_of(hit.cosine)))
        matches.sort(key=lambda match: match.score, reverse=True)
        return matches
