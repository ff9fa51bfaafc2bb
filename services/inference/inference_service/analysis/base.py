"""The interface every face analysis back-end implements, modelled on Immich's InferenceModel:
a class-level identity, a load() that runs once under a lock, and public methods that load on
first use and hand over to the subclass. Nothing downloads at run time: a missing model file is
a ModelFileMissing naming it."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from inference_service.restoration.base import check_bgr

Box = tuple[int, int, int, int]


class ModelFileMissing(FileNotFoundError):
    """A model file the analyzer needs is not on disk; the message names every missing file."""

    def __init__(self, paths: Iterable[Path], hint: str = "") -> None:
        self.paths = tuple(paths)
        message = "model file(s) missing: " + ", ".join(str(path) for path in self.paths)
        super().__init__(f"{message} ({hint})" if hint else message)


def require_files(model_dir: Path, names: Iterable[str]) -> dict[str, Path]:
    """The paths of the named files in model_dir; ModelFileMissing names those absent."""
    paths = {name: model_dir / name for name in names}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        raise ModelFileMissing(missing)
    return paths


@dataclass(frozen=True)
class Detection:
    """One face as a back-end finds it (FaceAnalyzer._analyze): the fields of DetectedFace, with
    the box as the detector reports it, which may reach past the edge of the image for a face
    that is cut off (detectors extrapolate)."""

    box: Box
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray


@dataclass(frozen=True)
class DetectedFace:
    box: Box
    """x0, y0, x1, y1 in the analysed image's pixels, within it (0 <= x0 < x1 <= width,
    0 <= y0 < y1 <= height): the part of the detector's box inside the image. The box reported
    to clients (detected_faces, search)."""
    detector_box: Box
    """The box as the detector reports it, past the edge where the face is cut off: what
    embed_at is given, so that a face is embedded again from the region it was found in."""
    score: float
    """Detector confidence; its scale belongs to the detector (dlib HOG: the SVM score)."""
    landmarks: np.ndarray
    """(5, 2) float32 in FFHQ order: left eye centre, right eye centre, nose tip, left mouth
    corner, right mouth corner, "left" as seen in the image (see faces.align.FFHQ_TEMPLATE_512).
    Not clipped: alignment may reach past the edge (the crop is filled there)."""
    embedding: np.ndarray
    """(d,) float32, L2-normalised; only comparable with embeddings of the same model_id."""


def check_landmarks(landmarks: np.ndarray) -> None:
    if not isinstance(landmarks, np.ndarray) or landmarks.shape != (5, 2):
        raise ValueError(f"expected (5, 2) landmarks, got {getattr(landmarks, 'shape', type(landmarks))}")


def check_box(box: Box) -> None:
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty box {box}")


def box_within(box: Box, width: int, height: int) -> Box | None:
    """The part of box inside a width x height image; None when no pixel of it is."""
    x0, y0, x1, y1 = box
    inside = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
    return inside if inside[0] < inside[2] and inside[1] < inside[3] else None


def l2_normalised(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise ValueError("cannot normalise a zero vector")
    return vector / np.float32(norm)


class FaceAnalyzer(ABC):
    """Detects, landmarks and embeds faces. Subclasses implement _load, _analyze and _embed_at;
    callers use load (optional), analyze and embed_at, which are safe to call from several
    threads."""

    model_id: ClassVar[str]
    """Stored with every embedding, so vectors of different models are never compared."""

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Load the models once; later calls, from any thread, return at once."""
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def analyze(self, image_bgr: np.ndarray) -> list[DetectedFace]:
        """Every face found in one detection pass over a uint8 HxWx3 BGR image, left to right,
        each with its box clipped to the image."""
        check_bgr(image_bgr)
        self.load()
        height, width = image_bgr.shape[:2]
        # In the order of the detector's boxes, which clipping would blur (two faces cut off by
        # the left edge would both start at 0): a face keeps the index it always had.
        detections = sorted(self._analyze(image_bgr), key=lambda found: (found.box[0], found.box[1]))
        faces = []
        for found in detections:
            box = box_within(found.box, width, height)
            if box is None:
                continue  # a detection with nothing of it in the image is no face to show
            faces.append(
                DetectedFace(
                    box=box,
                    detector_box=found.box,
                    score=found.score,
                    landmarks=found.landmarks,
                    embedding=found.embedding,
                )
            )
        return faces

    def embed_at(self, image_bgr: np.ndarray, landmarks: np.ndarray, box: Box) -> np.ndarray:
        """The embedding of the face at a known place, without detecting: used to embed a
        restored face where the original was found. L2-normalised float32."""
        check_bgr(image_bgr)
        check_landmarks(landmarks)
        check_box(box)
        self.load()
        return self._embed_at(image_bgr, landmarks, box)

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _analyze(self, image_bgr: np.ndarray) -> list[Detection]: ...

    @abstractmethod
    def _embed_at(self, image_bgr: np.ndarray, landmarks: np.ndarray, box: Box) -> np.ndarray: ...
