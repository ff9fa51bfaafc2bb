"""The whole restoration pipeline on real photos: one detection pass, per-face restoration
pasted back, identity and sharpness measured; whole-image enhancement when no face is found.
The GFPGAN run loads a randomly initialised v1 clean network that the test saves in the
released file's layout, through the production loader, on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.faces.align import align_face
from inference_service.pipeline import NO_FACE_WARNING, RestorationPipeline
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.gfpgan import GfpganRestorer

STAGES = {"decode", "analyze", "align", "restore", "paste", "measure", "encode"}


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def decode(content: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer()


def test_classical_pipeline_restores_every_face_of_the_group_photo(
    analyzer: DlibFaceAnalyzer, load_photo: Callable[[str], np.ndarray]
) -> None:
    original = load_photo("t1.jpg")
    pipeline = RestorationPipeline(ClassicalRestorer(), analyzer, ClassicalRestorer(), 256, 92)

    result = pipeline.run(jpeg(original))

    assert len(result.faces) == 6 and result.warnings == []
    assert decode(result.restored_jpeg).shape == original.shape
    assert max(decode(result.restored_thumbnail_jpeg).shape[:2]) == 256
    assert set(result.stage_ms) == STAGES
    assert (result.backend, result.restorer_model, result.analyzer_model) == (
        "classical",
        "classical-opencv-v2",
        "dlib-resnet-v1",
    )
    # The restored faces are still the same people...
    assert result.identity_min > 0.9 and result.identity_mean >= result.identity_min
    # ...and sharper.
    assert all(face.sharpness_gain > 1.0 for face in result.faces)
    assert all(np.isclose(np.linalg.norm(face.face.embedding), 1.0, atol=1e-5) for face in result.faces)


def test_image_without_a_face_is_enhanced_whole_and_says_so(analyzer: DlibFaceAnalyzer) -> None:
    rng = np.random.default_rng(0)
    landscape = cv2.GaussianBlur(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), (0, 0), 3)
    pipeline = RestorationPipeline(ClassicalRestorer(), analyzer, ClassicalRestorer(), 256, 92)

    result = pipeline.run(jpeg(landscape))

    assert result.faces == [] and result.warnings == [NO_FACE_WARNING]
    restored = decode(result.restored_jpeg)
    assert restored.shape == landscape.shape
    assert result.sharpness_after > result.sharpness_before


def test_gfpgan_pipeline_on_a_real_photo_changes_only_the_faces(
    gfpgan_checkpoint: Path, analyzer: DlibFaceAnalyzer, load_photo: Callable[[str], np.ndarray]
) -> None:
    restorer = GfpganRestorer(gfpgan_checkpoint, device="cpu", batch_size=2)
    # Two faces of the group photo: a real batch, with background around them.
    original = np.ascontiguousarray(load_photo("t1.jpg")[100:480, 0:440])
    content = cv2.imencode(".png", original)[1].tobytes()
    pipeline = RestorationPipeline(restorer, analyzer, ClassicalRestorer(), 256, 100)

    result = pipeline.run(content)

    assert len(result.faces) == 2 and result.backend == "gfpgan"
    assert result.restorer_model.startswith("gfpgan-")
    restored = cv2.imdecode(np.frombuffer(result.restored_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert restored.shape == original.shape and not np.isnan(restored.astype(np.float32)).any()
    # Outside the faces' aligned squares nothing but JPEG noise: the background is untouched.
    inside = np.zeros(original.shape[:2], np.uint8)
    for face in result.faces:
        _, affine = align_face(original, face.face.landmarks)
        square = cv2.warpAffine(
            np.full((512, 512), 255, np.uint8), cv2.invertAffineTransform(affine), original.shape[1::-1]
        )
        inside |= cv2.dilate(square, np.ones((9, 9), np.uint8))
    outside = inside == 0
    assert outside.mean() > 0.2
    difference = np.abs(restored.astype(np.int16) - original.astype(np.int16)).max(axis=2)
    assert np.percentile(difference[outside], 99) <= 6  # JPEG quality 100 round-off only
    assert difference[inside > 0].mean() > 10  # the faces were replaced
