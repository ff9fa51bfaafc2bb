"""One image through restoration, as GFPGAN's own pipeline does it: decode, detect faces
with five landmarks, align each to the 512x512 FFHQ template, restore the faces (in
batches), paste them back through the inverse transform with a feathered mask, measure,
encode. One detection pass serves restoration and embeddings. With no face found the
whole image is enhanced instead, and the result says so. Pure computation: no broker,
no storage.

Options steer one run (RestoreOptions): the fidelity weight goes to the restorer; `faces`
restores only the faces at those indexes (the analyser's order, which the item lists) and
leaves every other pixel as it was, apart from the feathered border of a chosen face that
overlaps; `upscale` 2 enlarges the whole photo (Lanczos) and pastes the restored faces at the
doubled size, so they keep the network's 512-pixel detail."""

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
# Followed by ":<index>", once per chosen index the photo has no face at.
FACE_INDEX_WARNING = "face-index-out-of-range"
UPSCALES = (1, 2)
tracer = trace.get_tracer(__name__)


class UndecodableImage(Exception):
    pass


class NoChosenFace(Exception):
    """Faces were chosen, but the photo has a face at none of those indexes."""


@dataclass(frozen=True)
class RestoreOptions:
    fidelity: float | None = None  # None: the restorer's default
    faces: tuple[int, ...] = ()  # indexes of the faces to restore; empty: every face
    upscale: int = 1

    def __post_init__(self) -> None:
        if self.upscale not in UPSCALES:
            raise ValueError(f"upscale must be one of {UPSCALES}, got {self.upscale}")
        if any(index < 0 for index in self.faces):
            raise ValueError(f"face indexes are 0 or more, got {list(self.faces)}")


@dataclass(frozen=True)
class FaceResult:
    face: DetectedFace
    identity_similarity: float
    sharpness_gain: float
    restored: bool = True  # False: not chosen, left as it was


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
    def restored_faces(self) -> list[FaceResult]:
        return [face for face in self.faces if face.restored]

    # Identity is measured on the faces that were restored: the others are the same person by construction.
    @property
    def identity_min(self) -> float:
        return min((face.identity_similarity for face in self.restored_faces), default=0.0)

    @property
    def identity_mean(self) -> float:
        restored = self.restored_faces
        return float(np.mean([face.identity_similarity for face in restored])) if restored else 0.0


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


def _scaled_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """The image-to-crop transform of the same face in the image enlarged `factor` times."""
    scaled = np.asarray(affine, dtype=np.float64).copy()
    scaled[:, :2] /= factor
    return scaled


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels in a DetectedFace's box, which lies within the analysed image (the size of image)."""
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


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

    def run(self, content: bytes, options: RestoreOptions | None = None) -> RestorationResult:
        options = options or RestoreOptions()
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
        chosen = set(range(len(detected)))
        if options.faces:
            missing = sorted({index for index in options.faces if index >= len(detected)})
            warnings.extend(f"{FACE_INDEX_WARNING}:{index}" for index in missing)
            chosen = set(options.faces) - set(missing)
            if not chosen:
                raise NoChosenFace(
                    f"faces {sorted(set(options.faces))} were chosen, but the photo has {len(detected)} face(s)"
                )
        height, width = original.shape[:2]
        factor = options.upscale
        if detected:
            to_restore = [face for index, face in enumerate(detected) if index in chosen]
            with stage("align"):
                aligned = [align_face(original, face.landmarks) for face in to_restore]
            with stage("restore"):
                restored_crops = self.restorer.restore_faces([crop for crop, _ in aligned], options.fidelity)
            with stage("paste"):
                base = original if factor == 1 else _enlarge(original, factor)
                restored = paste_faces(base, restored_crops, [_scaled_affine(affine, factor) for _, affine in aligned])
            # Measured at the original's size, so that scores compare across upscale settings.
            measured = restored if factor == 1 else cv2.resize(restored, (width, height), interpolation=cv2.INTER_AREA)
            with stage("measure"):
                for index, face in enumerate(detected):
                    after = self.analyzer.embed_at(measured, face.landmarks, face.detector_box)
                    before_sharpness = sharpness(_crop(original, face.box))
                    gain = sharpness(_crop(measured, face.box)) / before_sharpness if before_sharpness else 0.0
                    similarity = float(np.dot(face.embedding, after))
                    face_results.append(FaceResult(face, similarity, gain, restored=index in chosen))
        else:
            warnings.append(NO_FACE_WARNING)
            with stage("restore"):
                restored = self._enhancer.restore(original)
                if factor != 1:
                    restored = _enlarge(restored, factor)
            measured = restored if factor == 1 else cv2.resize(restored, (width, height), interpolation=cv2.INTER_AREA)
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
            sharpness_after=sharpness(measured),
            duration_ms=(time.perf_counter() - started) * 1000,
            backend=backend,
            restorer_model=self.restorer.model_id if detected else self._enhancer.model_id,
            analyzer_model=self.analyzer.model_id,
            stage_ms=stage_ms,
            warnings=warnings,
        )


def _enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_LANCZOS4)
