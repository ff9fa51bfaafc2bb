"""CodeFormerRestorer on a checkpoint the test writes itself: a randomly initialised CodeFormer
(spandrel_extra_arches' copy of the architecture, the released network's hyper-parameters)
saved in the released file's layout, {"params_ema": state_dict}. It restores nothing well, but
every step of the production path runs: file and sha256 checks, spandrel's loader, the
fidelity weight reaching the network, tensor conversion, paste-back.

The whole pipeline runs on a 280x260 crop of t1.jpg holding one face with background around
it, twice: at w = 0 and at w = 1. One 512x512 CodeFormer forward takes about 10 s on a 2-core
CPU, so these are the only two; the plumbing around the network (batches, the per-call weight,
refusals) is tested on a stand-in network."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.faces.align import align_face
from inference_service.pipeline import RestorationPipeline, RestorationResult
from inference_service.restoration.base import Restorer, WeightsMissing
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.codeformer import (
    RELEASED_ARCHITECTURE,
    CodeFormerRestorer,
    codeformer_class,
)

ONE_FACE = (slice(200, 480), slice(0, 260))  # rows, columns of t1.jpg
FIDELITIES = (0.0, 1.0)


@pytest.fixture(scope="module")
def photo(load_photo: Callable[[str], np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(load_photo("t1.jpg")[ONE_FACE])


@pytest.fixture(scope="module")
def restorers(codeformer_checkpoint: Path, offline: None) -> dict[float, CodeFormerRestorer]:
    """Two workers' restorers, CODEFORMER_FIDELITY 0 and 1, on the same weights."""
    digest = hashlib.sha256(codeformer_checkpoint.read_bytes()).hexdigest()
    loaded = {}
    for fidelity in FIDELITIES:
        restorer = CodeFormerRestorer(
            codeformer_checkpoint, sha256=digest.upper(), device="cpu", batch_size=1, fidelity=fidelity
        )
        restorer.load()
        loaded[fidelity] = restorer
    return loaded


@pytest.fixture(scope="module")
def runs(
    restorers: dict[float, CodeFormerRestorer], photo: np.ndarray, offline: None
) -> dict[float, tuple[RestorationResult, np.ndarray, list[torch.Tensor]]]:
    """The pipeline's result at each fidelity, the restored photo, and the network's raw outputs."""
    analyzer = DlibFaceAnalyzer()
    content = cv2.imencode(".png", photo)[1].tobytes()
    done = {}
    for fidelity, restorer in restorers.items():
        raw: list[torch.Tensor] = []
        hook = restorer._model.register_forward_hook(lambda _m, _i, output, outputs=raw: outputs.append(output[0]))
        try:
            result = RestorationPipeline(restorer, analyzer, ClassicalRestorer(), 256, 100).run(content)
        finally:
            hook.remove()
        restored = cv2.imdecode(np.frombuffer(result.restored_jpeg, np.uint8), cv2.IMREAD_COLOR)
        done[fidelity] = (result, restored, raw)
    return done


def face_squares(photo: np.ndarray, result: RestorationResult, grow: int = 9) -> np.ndarray:
    """Where each face's aligned 512x512 square lands in the photo, grown by the feathered rim."""
    inside = np.zeros(photo.shape[:2], np.uint8)
    for face in result.faces:
        _, affine = align_face(photo, face.face.landmarks)
        square = cv2.warpAffine(
            np.full((512, 512), 255, np.uint8), cv2.invertAffineTransform(affine), photo.shape[1::-1]
        )
        inside |= cv2.dilate(square, np.ones((grow, grow), np.uint8))
    return inside > 0


def test_the_released_checkpoint_layout_loads_on_cpu_in_full_precision(
    restorers: dict[float, CodeFormerRestorer], codeformer_checkpoint: Path
) -> None:
    restorer = restorers[0.0]
    assert isinstance(restorer, Restorer)
    assert restorer.loaded and restorer.name == "codeformer"
    digest = hashlib.sha256(codeformer_checkpoint.read_bytes()).hexdigest()
    assert restorer.model_id == "codeformer-" + digest[:12] and restorer.sha256 == digest
    assert restorer.device == torch.device("cpu") and restorer.half is False
    network = restorer._model
    assert isinstance(network, codeformer_class())
    assert all(p.dtype == torch.float32 for p in network.parameters())
    # spandrel read the released hyper-parameters back off the state dict
    assert network.connect_list == RELEASED_ARCHITECTURE["connect_list"]
    assert network.n_layers == RELEASED_ARCHITECTURE["n_layers"]
    assert network.dim_embd == RELEASED_ARCHITECTURE["dim_embd"]


def test_the_pipeline_restores_the_face_and_leaves_the_rest_of_the_photo(
    runs: dict[float, tuple[RestorationResult, np.ndarray, list[torch.Tensor]]], photo: np.ndarray
) -> None:
    result, restored, raw = runs[0.0]
    assert len(result.faces) == 1 and result.backend == "codeformer"
    assert result.restorer_model.startswith("codeformer-")
    assert restored.shape == photo.shape
    assert [tuple(output.shape) for output in raw] == [(1, 3, 512, 512)]
    assert torch.isfinite(raw[0]).all()  # no NaN (nor infinity) out of the network

    inside = face_squares(photo, result)
    outside = ~inside
    assert outside.mean() > 0.3  # there is background left to check
    difference = np.abs(restored.astype(np.int16) - photo.astype(np.int16)).max(axis=2)
    assert np.percentile(difference[outside], 99) <= 6  # JPEG quality 100 round-off only
    assert difference[inside].mean() > 10  # the face was replaced


def test_a_different_fidelity_gives_a_different_face(
    runs: dict[float, tuple[RestorationResult, np.ndarray, list[torch.Tensor]]], photo: np.ndarray
) -> None:
    (strong, strong_image, strong_raw), (faithful, faithful_image, faithful_raw) = runs[0.0], runs[1.0]
    assert len(faithful.faces) == 1 and faithful.restorer_model == strong.restorer_model
    assert (strong_raw[0] - faithful_raw[0]).abs().mean() > 0.01
    inside = face_squares(photo, strong)
    change = np.abs(strong_image.astype(np.int16) - faithful_image.astype(np.int16)).max(axis=2)
    assert change[inside].mean() > 2
    assert np.percentile(change[~inside], 99) <= 6


class WeightRecorder(torch.nn.Module):
    """Stands in for the network where only the plumbing is under test: out = -in, and each
    call's batch size and weight w are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, float]] = []

    def forward(self, x: torch.Tensor, weight: float = 0.5) -> tuple[torch.Tensor, None]:
        self.calls.append((x.shape[0], weight))
        return -x, None


def stand_in_restorer(tmp_path: Path, batch_size: int, fidelity: float) -> tuple[CodeFormerRestorer, WeightRecorder]:
    restorer = CodeFormerRestorer(tmp_path / "unused.pth", device="cpu", batch_size=batch_size, fidelity=fidelity)
    net = WeightRecorder()
    restorer._model = net  # loaded already: load() leaves it alone
    return restorer, net


def test_the_default_fidelity_applies_unless_a_call_gives_its_own(tmp_path: Path) -> None:
    restorer, net = stand_in_restorer(tmp_path, batch_size=2, fidelity=0.7)
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(3)]

    outputs = restorer.restore_faces(faces)
    restorer.restore_faces(faces[:1], fidelity=0.0)
    restorer.restore_faces(faces[:1], fidelity=1)

    assert net.calls == [(2, 0.7), (1, 0.7), (1, 0.0), (1, 1.0)]
    for face, output in zip(faces, outputs, strict=True):
        np.testing.assert_array_equal(output, 255 - face)


def test_a_whole_image_is_restored_as_one_face_at_its_own_size(tmp_path: Path) -> None:
    restorer, net = stand_in_restorer(tmp_path, batch_size=4, fidelity=0.5)
    image = np.full((300, 200, 3), (10, 100, 200), np.uint8)
    output = restorer.restore(image, fidelity=0.25)
    assert output.shape == image.shape and net.calls == [(1, 0.25)]
    np.testing.assert_array_equal(output, 255 - image)


@pytest.mark.parametrize("fidelity", [-0.01, 1.01, float("nan"), float("inf")])
def test_a_fidelity_outside_zero_to_one_is_refused(tmp_path: Path, fidelity: float) -> None:
    restorer, net = stand_in_restorer(tmp_path, batch_size=1, fidelity=0.5)
    with pytest.raises(ValueError, match="fidelity"):
        restorer.restore_faces([np.zeros((512, 512, 3), np.uint8)], fidelity=fidelity)
    assert net.calls == []
    with pytest.raises(ValueError, match="fidelity"):
        CodeFormerRestorer(tmp_path / "unused.pth", fidelity=fidelity)


def test_a_missing_weights_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "models" / "codeformer.pth"
    with pytest.raises(WeightsMissing, match=r"codeformer\.pth") as raised:
        CodeFormerRestorer(path).load()
    assert raised.value.path == path


def test_a_file_with_the_wrong_sha256_is_refused(codeformer_checkpoint: Path) -> None:
    """The real (random) checkpoint, pinned to another digest: refused before it is read."""
    actual = hashlib.sha256(codeformer_checkpoint.read_bytes()).hexdigest()
    restorer = CodeFormerRestorer(codeformer_checkpoint, sha256="0" * 64, device="cpu")
    with pytest.raises(ValueError, match="sha256 mismatch") as raised:
        restorer.load()
    assert "0" * 64 in str(raised.value) and actual in str(raised.value)
    assert not restorer.loaded


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "codeformer.pth"
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ValueError, match="could not be read as a checkpoint"):
        CodeFormerRestorer(path, device="cpu").load()


def test_a_gfpgan_checkpoint_in_codeformers_place_is_named(gfpgan_checkpoint: Path) -> None:
    restorer = CodeFormerRestorer(gfpgan_checkpoint, device="cpu")
    with pytest.raises(ValueError, match=r"GFPGAN.*not CodeFormer"):
        restorer.load()
    assert not restorer.loaded
