"""Similar-face search's index: one interface, an embedded engine and its server form."""

from history_service.face_index.base import FaceHit, FaceIndex, FaceIndexBusy, IndexedFace, SearchFilters
from history_service.face_index.factory import open_face_index
from history_service.face_index.tuning import DEFAULT_TUNING, EngineTuning

__all__ = [
    "DEFAULT_TUNING",
    "EngineTuning",
    "FaceHit",
    "FaceIndex",
    "FaceIndexBusy",
    "IndexedFace",
    "SearchFilters",
    "open_face_index",
]
