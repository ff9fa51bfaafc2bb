"""InsightFaceAnalyzer through the real insightface and onnxruntime packages, on a buffalo_l
pack that the test writes itself.

The released pack cannot be downloaded here, so the test builds the two ONNX files the
analyser needs with `onnx.helper`, in the shapes insightface routes by:
- det_10g.onnx: an SCRFD-style detector (input 1x3x640x640; scores, box distances and
  five-point offsets for strides 8, 16 and 32, two anchors per cell) that always reports
  the faces it was built with: those dlib finds in the photo, encoded on the anchors
  insightface decodes them from. It proves the loading, anchor decoding, rescaling and
  NMS path and our wrapper, not detection quality.
- w600k_r50.onnx: an ArcFace-shaped embedder (input 1x3x112x112, output 1x512): average
  pooling to 8x8 and a fixed random projection, so the embedding depends on the pixels of
  the aligned crop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference_service.analysis.base import DetectedFace
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.analysis.insightface_analyzer import InsightFaceAnalyzer
from inference_service.models import choose_analyzer
from inference_service.pipeline import RestorationPipeline
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.settings import Settings

DETECTOR_SIZE = 640
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
SCORE = 0.9


def detector_scale(image: np.ndarray) -> float:
    """How SCRFD scales an image into its square input (aspect kept, top-left aligned)."""
    height, width = image.shape[:2]
    if height / width > 1.0:
        return DETECTOR_SIZE / height
    return int(DETECTOR_SIZE * height / width) / height


def save_model(path: Path, nodes: list[onnx.NodeProto], inputs: list, outputs: list, name: str) -> None:
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_detector(path: Path, faces: list[DetectedFace], scale: float) -> None:
    """Each face goes on one anchor of stride 32 (the cell holding its centre): score, box as
    distances from the anchor and landmarks as offsets from it, all in units of the stride."""
    stride = STRIDES[-1]
    cells = DETECTOR_SIZE // stride
    outputs: dict[str, list[np.ndarray]] = {"score": [], "bbox": [], "kps": []}
    for each in STRIDES:
        count = (DETECTOR_SIZE // each) ** 2 * ANCHORS_PER_CELL
        outputs["score"].append(np.zeros((count, 1), np.float32))
        outputs["bbox"].append(np.zeros((count, 4), np.float32))
        outputs["kps"].append(np.zeros((count, 10), np.float32))
    for face in faces:
        x1, y1, x2, y2 = (value * scale for value in face.box)
        column, row = int((x1 + x2) / 2 // stride), int((y1 + y2) / 2 // stride)
        anchor = np.array([column * stride, row * stride], np.float32)
        index = (row * cells + column) * ANCHORS_PER_CELL
        outputs["score"][-1][index] = SCORE
        outputs["bbox"][-1][index] = [anchor[0] - x1, anchor[1] - y1, x2 - anchor[0], y2 - anchor[1]]
        outputs["bbox"][-1][index] /= stride
        outputs["kps"][-1][index] = ((face.landmarks * scale - anchor) / stride).reshape(-1)
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, DETECTOR_SIZE, DETECTOR_SIZE])
    nodes, results = [], []
    for kind in ("score", "bbox", "kps"):
        for stride_index, value in enumerate(outputs[kind]):
            name = f"{kind}_{STRIDES[stride_index]}"
            nodes.append(
                helper.make_node("Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(value))
            )
            results.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    save_model(path, nodes, [image], results, "fixed_face_detector")


def write_embedder(path: Path) -> None:
    projection = np.random.default_rng(7).normal(0.0, 1.0, (3 * 8 * 8, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], name="pool", kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Constant", [], ["projection"], name="weights", value=numpy_helper.from_array(projection)),
        helper.make_node("MatMul", ["flat", "projection"], ["embedding"], name="project"),
    ]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])
    embedding = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 512])
    save_model(path, nodes, [image], [embedding], "pooled_projection_embedder")


@pytest.fixture(scope="module")
def group_photo(load_photo: Callable[[str], np.ndarray]) -> np.ndarray:
    return load_photo("t1.jpg")


@pytest.fixture(scope="module")
def dlib_faces(group_photo: np.ndarray) -> list[DetectedFace]:
    faces = DlibFaceAnalyzer().analyze(group_photo)
    assert len(faces) == 6
    return faces


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, dlib_faces: list[DetectedFace], group_photo: np.ndarray
) -> Path:
    root = tmp_path_factory.mktemp("models")
    pack = InsightFaceAnalyzer.pack_dir(root)
    pack.mkdir(parents=True)
    write_detector(pack / "det_10g.onnx", dlib_faces, detector_scale(group_photo))
    write_embedder(pack / "w600k_r50.onnx")
    return root


@pytest.fixture(scope="module")
def analyzer(model_dir: Path, offline: None) -> InsightFaceAnalyzer:
    analyzer = InsightFaceAnalyzer(model_dir, device="cpu")
    analyzer.load()
    return analyzer


def test_faces_come_back_where_the_detector_put_them_with_unit_embeddings(
    analyzer: InsightFaceAnalyzer, group_photo: np.ndarray, dlib_faces: list[DetectedFace]
) -> None:
    found = analyzer.analyze(group_photo)

    assert len(found) == len(dlib_faces)
    by_position = sorted(found, key=lambda face: face.box)
    for got, expected in zip(by_position, sorted(dlib_faces, key=lambda face: face.box), strict=True):
        # Through the detector's 640-pixel input and back: a pixel or two of rounding.
        assert np.abs(np.subtract(got.box, expected.box)).max() <= 2, (got.box, expected.box)
        assert np.abs(got.landmarks - expected.landmarks).max() <= 2.0
        assert got.landmarks.shape == (5, 2) and got.landmarks.dtype == np.float32
        assert got.score == pytest.approx(SCORE, abs=1e-6)
        assert got.embedding.shape == (512,) and got.embedding.dtype == np.float32
        assert np.linalg.norm(got.embedding) == pytest.approx(1.0, abs=1e-5)
    assert analyzer.model_id == "insightface-buffalo_l-w600k_r50"


def test_embedding_at_known_landmarks_matches_the_detection_pass_and_depends_on_the_face(
    analyzer: InsightFaceAnalyzer, group_photo: np.ndarray
) -> None:
    found = analyzer.analyze(group_photo)

    again = [analyzer.embed_at(group_photo, face.landmarks, face.box) for face in found]

    for face, embedding in zip(found, again, strict=True):
        assert float(face.embedding @ embedding) == pytest.approx(1.0, abs=1e-5)
    similarities = np.array([[float(a @ b) for b in again] for a in again])
    assert similarities[~np.eye(len(again), dtype=bool)].max() < 0.99  # six faces, six vectors


def test_auto_picks_insightface_when_its_pack_is_present_and_loads_it_on_the_cpu(
    model_dir: Path, offline: None
) -> None:
    analyzer, choice = choose_analyzer(Settings(model_dir=str(model_dir), device="cpu"))

    assert isinstance(analyzer, InsightFaceAnalyzer) and analyzer.loaded
    assert choice.name == "insightface" and "buffalo_l" in choice.reason


def test_pipeline_restores_the_faces_insightface_finds_and_measures_identity(
    analyzer: InsightFaceAnalyzer, group_photo: np.ndarray
) -> None:
    pipeline = RestorationPipeline(ClassicalRestorer(), analyzer, ClassicalRestorer(), 256, 92)

    result = pipeline.run(cv2.imencode(".png", group_photo)[1].tobytes())

    assert len(result.faces) == 6 and result.warnings == []
    assert result.analyzer_model == "insightface-buffalo_l-w600k_r50"
    for face in result.faces:
        assert face.face.embedding.shape == (512,)
        assert -1.0 <= face.identity_similarity <= 1.0
    restored = cv2.imdecode(np.frombuffer(result.restored_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert restored.shape == group_photo.shape
