"""One image through restoration, as GFPGAN's own pipeline does it: decode, detect faces
with five landmarks, align each to the 512x512 FFHQ template, restore the faces (in
batches), paste them back through the inverse transform with a feathered mask, measure,
encode. One detection pass serves restoration and embeddings. With no face found the
whole image is enhanced instead, and the result says so. Pure computation: no broker,
no storage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
from opentelemetry import trace

from inference_service.analysis.base import DetectedFace, FaceAnalyzer
from inference_service.faces.align import align_face, paste_faces
from inference_service.quality import make_thumbnail, sharpness
from inference_service.restoration.base import Restorer

NO_FACE_WARNING = "no-face-found"
tracer = trace.get_tracer(__name__)


class UndecodableImage(Exception):
    pass


@dataclass(frozen=True)
class FaceResult:
    face: DetectedFace
    identity_similarity: float
    sharpness_gain: float


@dataclass(frozen=True)
class RestorationResult:
    restored_jpeg: bytes
    original_thumbnail_jpeg: bytes
    restored_thumbnail_jpeg: bytes
    faces: list[FaceResult]
    sharpness_before: float
    sharpness_after: float
    duration_ms: float
    backend: str
    restorer_model: str
    analyzer_model: str
    stage_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def identity_min(self) -> float:
        return min((face.identity_similarity for face in self.faces), default=0.0)

    @property
    def identity_mean(self) -> float:
        return float(np.mean([face.identity_similarity for face in self.faces])) if self.faces else 0.0


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    height, width = image.shape[:2]
    return image[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]


class RestorationPipeline:
    def __init__(
        self,
        restorer: Restorer,
        analyzer: FaceAnalyzer,
        whole_image_enhancer: Restorer,
        thumbnail_max_side: int,
        jpeg_quality: int,
    ) -> None:
        self.restorer = restorer
        self.analyzer = analyzer
        self._enhancer = whole_image_enhancer
        self._thumbnail_max_side = thumbnail_max_side
        self._jpeg_quality = jpeg_quality

    def run(self, content: bytes) -> RestorationResult:
        started = time.perf_counter()
        stage_ms: dict[str, float] = {}

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            begun = time.perf_counter()
            with tracer.start_as_current_span(f"restore.{name}"):
                yield
            stage_ms[name] = (time.perf_counter() - begun) * 1000

        with stage("decode"):
            original = cv2.imdecode(np.frombuffer(content, dtype=np.uint8), cv2.IMREAD_COLOR)
        if original is None:
            raise UndecodableImage("the stored original could not be decoded")
        with stage("analyze"):
            detected = self.analyzer.analyze(original)
        warnings: list[str] = []
        face_results: list[FaceResult] = []
        if detected:
            with stage("align"):
                aligned = [align_face(original, face.landmarks) for face in detected]
            with stage("restore"):
                restored_crops = self.restorer.restore_faces([crop for crop, _ in aligned])
            with stage("paste"):
                restored = paste_faces(original, restored_crops, [affine for _, affine in aligned])
            with stage("measure"):
                for face in detected:
                    after = self.analyzer.embed_at(restored, face.landmarks, face.box)
                    before_sharpness = sharpness(_crop(original, face.box))
                    gain = sharpness(_crop(restored, face.box)) / before_sharpness if before_sharpness else 0.0
                    face_results.append(FaceResult(face, float(np.dot(face.embedding, after)), gain))
        else:
            warnings.append(NO_FACE_WARNING)
            with stage("restore"):
                restored = self._enhancer.restore(original)
        with stage("encode"):
            restored_jpeg = _encode_jpeg(restored, self._jpeg_quality)
            original_thumbnail = _encode_jpeg(make_thumbnail(original, self._thumbnail_max_side), self._jpeg_quality)
            restored_thumbnail = _encode_jpeg(make_thumbnail(restored, self._thumbnail_max_side), self._jpeg_quality)
        backend = self.restorer.name if detected else self._enhancer.name
        return RestorationResult(
            restored_jpeg=restored_jpeg,
            original_thumbnail_jpeg=original_thumbnail,
            restored_thumbnail_jpeg=restored_thumbnail,
            faces=face_results,
            sharpness_before=sharpness(original),
            sharpness_after=sharpness(restored),
            duration_ms=(time.perf_counter() - started) * 1000,
            backend=backend,
            restorer_model=self.restorer.model_id if detected else self._enhancer.model_id,
            analyzer_model=self.analyzer.model_id,
            stage_ms=stage_ms,
            warnings=warnings,
        )
