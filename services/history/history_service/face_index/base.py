"""The face index: a read model of the faces collection that answers "which stored faces look
most like this one?" with metadata filters. Two engines implement it (embedded Qdrant Edge,
a Qdrant server); both keep one collection per analyser model, because vectors of different
models are never compared and do not even have the same dimension."""

from __future__ import annotations

import hashlib
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

# Payload fields of every point; the filtered ones have payload indexes.
USER_ID = "user_id"
IMAGE_ID = "image_id"
FACE_INDEX = "face_index"
MODEL = "model"
CREATED_AT = "created_at"  # epoch milliseconds of the image's upload
LOCATION = "location"
TAGS = "tags"
BOX = "box"

_POINT_NAMESPACE = uuid.UUID("6f1d7c8e-2b1a-4f5e-9c3d-8a7b6e5f4d3c")
_PLAIN_MODEL_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def point_id(image_id: str, face_index: int) -> str:
    """The same id for the same face on every delivery, so an upsert never duplicates a face."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{image_id}:{face_index}"))


def collection_for(prefix: str, model: str) -> str:
    """The collection (or shard directory) holding one model's vectors."""
    if _PLAIN_MODEL_ID.fullmatch(model) and model not in (".", ".."):
        return f"{prefix}-{model}"
    return f"{prefix}-{hashlib.sha256(model.encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class IndexedFace:
    """One face as the index stores it: the vector and what searches filter on."""

    image_id: str
    face_index: int
    user_id: str
    model: str
    vector: Sequence[float]
    created_at_ms: int
    location: str = ""
    tags: tuple[str, ...] = ()
    box: tuple[int, ...] = ()

    @property
    def point_id(self) -> str:
        return point_id(self.image_id, self.face_index)

    def payload(self) -> dict[str, object]:
        return {
            USER_ID: self.user_id,
            IMAGE_ID: self.image_id,
            FACE_INDEX: self.face_index,
            MODEL: self.model,
            CREATED_AT: self.created_at_ms,
            LOCATION: self.location,
            TAGS: list(self.tags),
            BOX: list(self.box),
        }


@dataclass(frozen=True)
class SearchFilters:
    """Metadata filters; None or empty does not filter. Bounds are inclusive."""

    created_from_ms: int | None = None
    created_to_ms: int | None = None
    location: str | None = None
    # Any of these.
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaceHit:
    image_id: str
    face_index: int
    user_id: str
    # Cosine similarity, -1..1.
    cosine: float
    box: tuple[int, ...] = field(default=())

    @classmethod
    def from_payload(cls, payload: dict[str, object], cosine: float) -> FaceHit:
        box = payload.get(BOX) or []
        return cls(
            image_id=str(payload[IMAGE_ID]),
            face_index=int(payload[FACE_INDEX]),  # type: ignore[call-overload]
            user_id=str(payload[USER_ID]),
            cosine=float(cosine),
            box=tuple(int(value) for value in box),  # type: ignore[attr-defined]
        )


class FaceIndexBusy(RuntimeError):
    """The embedded index is held by another process (the running history service)."""


class FaceIndex(ABC):
    """Every method is idempotent, so that event redelivery and reindexing are safe."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def replace_image(self, image_id: str, faces: Sequence[IndexedFace]) -> None:
        """Make `faces` the image's only faces in the index (in any model's collection)."""

    @abstractmethod
    async def upsert(self, faces: Sequence[IndexedFace]) -> None:
        """Write faces of any number of images as they are, other faces untouched (reindex)."""

    @abstractmethod
    async def delete_image(self, image_id: str) -> None: ...

    @abstractmethod
    async def delete_user(self, user_id: str) -> None: ...

    @abstractmethod
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
        """The top_k faces of `model` most similar to `vector`, best first; user_id None searches
        every user's faces. `exclude` names (image_id, face_index) pairs to leave out."""

    @abstractmethod
    async def count(self, model: str | None = None) -> int:
        """Faces in the index (of one model, or of all)."""

    @abstractmethod
    async def drop_all(self) -> None:
        """Remove every collection of this index (reindex rebuilds from MongoDB)."""

    async def optimize(self) -> None:  # noqa: B027 - a no-op unless the engine needs it
        """Build what the engine does not build by itself; a no-op where it does."""

    async def flush(self) -> None:  # noqa: B027 - a no-op unless the engine needs it
        """Make writes durable where the engine buffers them; a no-op where it does not."""
