"""Which engine serves the face index: a Qdrant server when QDRANT_URL is set, otherwise the
embedded Qdrant Edge under FACE_INDEX_PATH."""

from __future__ import annotations

from history_service.face_index.base import FaceIndex
from history_service.face_index.tuning import DEFAULT_TUNING, EngineTuning
from history_service.settings import Settings


async def open_face_index(
    settings: Settings, tuning: EngineTuning = DEFAULT_TUNING, *, background_optimize: bool = True
) -> FaceIndex:
    index: FaceIndex
    if settings.qdrant_url:
        from history_service.face_index.server import QdrantServerFaceIndex

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        index = QdrantServerFaceIndex.connect(settings.qdrant_url, api_key, settings.face_index_collection, tuning)
    else:
        from history_service.face_index.edge import EdgeFaceIndex

        index = EdgeFaceIndex(
            settings.face_index_path, settings.face_index_collection, tuning, background_optimize=background_optimize
        )
    await index.open()
    return index
