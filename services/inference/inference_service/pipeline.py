"""One image through restoration: decode, restore, measure, thumbnail, encode.
Pure computation: no broker, no storage."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from inference_service.quality import count_faces, make_thumbnail, sharpness
from inference_service.restoration.base import Restorer


class UndecodableImage(Exception):
    pass


@dataclass(frozen=True)
class RestorationResult:
    restored_jpeg: bytes
    original_thumbnail_jpeg: bytes
    restored_thumbnail_jpeg: bytes
    faces: int
    sharpness_before: float
    sharpness_after: float
    duration_ms: float
    backend: str


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


def restore_image(content: bytes, restorer: Restorer, thumbnail_max_side: int, jpeg_quality: int) -> RestorationResult:
    started = time.perf_counter()
    original = cv2.imdecode(np.frombuffer(content, dtype=np.uint8), cv2.IMREAD_COLOR)
    if original is None:
        raise UndecodableImage("the stored original could not be decoded")
    restored = restorer.restore(original)
    return RestorationResult(
        restored_jpeg=_encode_jpeg(restored, jpeg_quality),
        original_thumbnail_jpeg=_encode_jpeg(make_thumbnail(original, thumbnail_max_side), jpeg_quality),
        restored_thumbnail_jpeg=_encode_jpeg(make_thumbnail(restored, thumbnail_max_side), jpeg_quality),
        faces=count_faces(original),
        sharpness_before=sharpness(original),
        sharpness_after=sharpness(restored),
        duration_ms=(time.perf_counter() - started) * 1000,
        backend=restorer.name,
    )
