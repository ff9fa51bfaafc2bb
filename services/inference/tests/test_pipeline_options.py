"""The options one run takes, on the six-face group photo of the insightface wheel: only the
chosen faces restored (every other pixel as it was, apart from the feathered border of a chosen
face), indexes the photo has no face at, the fidelity weight reaching the network, and upscale 2.

The faces are restored by a randomly initialised GFPGAN saved in the released layout and
loaded through the production loader (it replaces a face with something visibly different,
so a face it touched cannot pass for untouched); the fidelity plumbing by CodeFormer's
restorer around a stand-in network that records the weight it is called with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facerestore.events.v1 import events_pb2
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.faces.align import align_face
from inference_service.pipeline import (
    FACE_INDEX_WARNING,
    NoChosenFace,
    RestorationPipeline,
    RestorationResult,
    RestoreOptions,
)
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.codeformer import CodeFormerRestorer
from inference_service.restoration.gfpgan import GfpganRestorer
from inference_service.worker import RestorationJob, restored_event

CHOSEN = (1, 4)
ONE_FACE = (slice(200, 480), slice(0, 260))  # rows, columns of t1.jpg: one face and background
JPEG_NOISE = 6  # the 99th percentile of |difference| that JPEG quality 100 round-off stays under


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def decode(content: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)


def squares(photo: np.ndarray, result: RestorationResult, indexes: tuple[int, ...], grow: int = 9) -> np.ndarray:
    """Where the aligned 512x512 squares of those faces land in the photo, grown by the feathered rim."""
    inside = np.zeros(photo.shape[:2], np.uint8)
    for index in indexes:
        _, affine = align_face(photo, result.faces[index].face.landmarks)
        square = cv2.warpAffine(
            np.full((512, 512), 255, np.uint8), cv2.invertAffineTransform(affine), photo.shape[1::-1]
        )
        inside |= cv2.dilate(square, np.ones((grow, grow), np.uint8))
    return inside > 0


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer()


@pytest.fixture(scope="module")
def gfpgan(gfpgan_checkpoint: Path) -> GfpganRestorer:
    restorer = GfpganRestorer(gfpgan_checkpoint, device="cpu", batch_size=2)
    restorer.load()
    return restorer


def test_only_the_chosen_faces_of_the_six_face_photo_are_restored_and_the_others_are_unchanged(
    gfpgan: GfpganRestorer, analyzer: DlibFaceAnalyzer, load_photo: Callable[[str], np.ndarray]
) -> None:
    photo = load_photo("t1.jpg")
    pipeline = RestorationPipeline(gfpgan, analyzer, ClassicalRestorer(), 256, 100)

    result = pipeline.run(png(photo), RestoreOptions(faces=CHOSEN))

    restored = decode(result.restored_jpeg)
    assert restored.shape == photo.shape and result.warnings == []
    # Every face is listed, in the analyser's order (the indexes a client chose from)...
    assert len(result.faces) == 6
    assert [face.restored for face in result.faces] == [index in CHOSEN for index in range(6)]
    change = difference(restored, photo)
    chosen = squares(photo, result, CHOSEN)
    # ...the chosen two were replaced...
    for index in CHOSEN:
        assert change[squares(photo, result, (index,))].mean() > 10, index
    # ...and outside their squares and feathered rims nothing moved but JPEG round-off:
    assert np.percentile(change[~chosen], 99) <= JPEG_NOISE
    for index in set(range(6)) - set(CHOSEN):
        x0, y0, x1, y1 = result.faces[index].face.box
        box = np.zeros(photo.shape[:2], bool)
        box[max(0, y0) : y1, max(0, x0) : x1] = True
        untouched_face = box & ~chosen
        assert untouched_face.sum() > 0.8 * box.sum(), index
        assert change[untouched_face].mean() < 1.5, index
        assert np.percentile(change[untouched_face], 99) <= JPEG_NOISE, index
    # Identity is scored on the restored faces; the untouched ones are the same people anyway.
    scores = [face.identity_similarity for face in result.faces]
    assert result.identity_min == pytest.approx(min(scores[index] for index in CHOSEN))
    assert min(scores[index] for index in set(range(6)) - set(CHOSEN)) > 0.95


def test_indexes_the_photo_has_no_face_at_are_ignored_with_a_warning_and_none_left_is_refused(
    analyzer: DlibFaceAnalyzer, load_photo: Callable[[str], np.ndarray]
) -> None:
    content = png(load_photo("t1.jpg"))
    pipeline = RestorationPipeline(ClassicalRestorer(), analyzer, ClassicalRestorer(), 256, 92)

    result = pipeline.run(content, RestoreOptions(faces=(9, 0, 6)))

    assert result.warnings == [f"{FACE_INDEX_WARNING}:6", f"{FACE_INDEX_WARNING}:9"]
    assert [face.restored for face in result.faces] == [True, False, False, False, False, False]
    with pytest.raises(NoChosenFace, match=r"\[6, 7\] were chosen, but the photo has 6 face"):
        pipeline.run(content, RestoreOptions(faces=(7, 6)))


def test_upscale_two_doubles_the_photo_and_pastes_the_face_at_the_doubled_size(
    gfpgan: GfpganRestorer, analyzer: DlibFaceAnalyzer, load_photo: Callable[[str], np.ndarray]
) -> None:
    photo = np.ascontiguousarray(load_photo("t1.jpg")[ONE_FACE])
    pipeline = RestorationPipeline(gfpgan, analyzer, ClassicalRestorer(), 256, 100)

    single = pipeline.run(png(photo))
    double = pipeline.run(png(photo), RestoreOptions(upscale=2))

    height, width = photo.shape[:2]
    restored = decode(double.restored_jpeg)
    assert restored.shape == (2 * height, 2 * width, 3)
    assert len(double.faces) == 1 and double.faces[0].restored
    enlarged = cv2.resize(photo, (2 * width, 2 * height), interpolation=cv2.INTER_LANCZOS4)
    face = cv2.resize(squares(photo, double, (0,)).astype(np.uint8), (2 * width, 2 * height)) > 0
    change = difference(restored, enlarged)
    assert np.percentile(change[~face], 99) <= JPEG_NOISE  # the background is the plain enlargement
    assert change[face].mean() > 10  # the face is the network's, pasted at twice the size
    # At the original's size the face is the one a run without upscale makes.
    back = cv2.resize(restored, (width, height), interpolation=cv2.INTER_AREA)
    same_face = squares(photo, single, (0,), grow=1) & (difference(decode(single.restored_jpeg), photo) > 0)
    assert difference(back, decode(single.restored_jpeg))[same_face].mean() < 8
    # Scores are measured at the original's size, so they compare across upscale settings.
    assert double.faces[0].identity_similarity == pytest.approx(single.faces[0].identity_similarity, abs=0.05)


def test_faces_cut_off_by_the_edges_are_reported_inside_the_original_in_its_pixels_at_either_upscale(
    analyzer: DlibFaceAnalyzer, cut_off_faces: tuple[np.ndarray, int, int]
) -> None:
    photo = cut_off_faces[0]
    height, width = photo.shape[:2]
    pipeline = RestorationPipeline(ClassicalRestorer(), analyzer, ClassicalRestorer(), 256, 92)
    job = RestorationJob("image", "user", "originals/image.png", "r1", events_pb2.RestorationOptions())
    expected = [face.box for face in analyzer.analyze(photo)]

    for upscale in (1, 2):
        result = pipeline.run(png(photo), RestoreOptions(upscale=upscale))
        event = restored_event(job, ("r", "o", "t"), result, events_pb2.RestorationOptions(upscale=upscale))

        assert decode(result.restored_jpeg).shape == (upscale * height, upscale * width, 3)
        boxes = [tuple(face.box) for face in event.face_details]
        # The original's pixels whatever the upscale, and within the original.
        assert boxes == expected and len(boxes) == 6
        assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1 in boxes), boxes
        assert min(box[0] for box in boxes) == 0 and min(box[1] for box in boxes) == 0
        assert max(box[2] for box in boxes) == width
        # The cut-off faces are restored and measured from where the detector found them.
        assert result.identity_min > 0.9


class WeightRecorder(torch.nn.Module):
    """Stands in for CodeFormer's network: out = -in, and each call's weight w is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[float] = []

    def forward(self, x: torch.Tensor, weight: float = 0.5) -> tuple[torch.Tensor, None]:
        self.weights.append(weight)
        return -x, None


def test_the_fidelity_of_a_run_reaches_the_network_and_a_run_without_one_takes_the_default(
    tmp_path: Path, analyzer: DlibFaceAnalyzer, load_photo: Callable[[str], np.ndarray]
) -> None:
    restorer = CodeFormerRestorer(tmp_path / "unused.pth", device="cpu", batch_size=8, fidelity=0.5)
    network = WeightRecorder()
    restorer._model = network  # loaded already: load() leaves it alone
    pipeline = RestorationPipeline(restorer, analyzer, ClassicalRestorer(), 256, 92)
    content = png(load_photo("t1.jpg"))

    pipeline.run(content, RestoreOptions(fidelity=0.2, faces=(0, 2)))
    pipeline.run(content)

    assert network.weights == [0.2, 0.5]


@pytest.mark.parametrize(("upscale", "faces"), [(3, ()), (0, ()), (1, (-1,))])
def test_options_out_of_their_range_are_refused(upscale: int, faces: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        RestoreOptions(faces=faces, upscale=upscale)
