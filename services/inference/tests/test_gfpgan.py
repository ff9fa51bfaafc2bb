"""GfpganRestorer on a checkpoint the test writes itself: a randomly initialised
GFPGANv1Clean (spandrel's copy of the architecture, GFPGANv1.4's hyper-parameters) saved in
the released file's layout, {"params_ema": state_dict}. It restores nothing well, but every
step of the production path runs: file checks, spandrel's loader, batching, tensor
conversion, paste-back.

The full path runs on a 440x380 crop of t1.jpg holding two faces rather than on
Tom_Hanks_54745.png: two faces make one real batch of two (and a third forward checks that
batching keeps faces in order), and leave background between and around the faces to prove
untouched; the Tom Hanks photo is 112x112 and its one face's square covers all of it. One
512x512 forward takes 3-5 s per face on a 2-core CPU; the file runs in about 25 s."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from spandrel.architectures.Compact import Compact

from inference_service.faces.align import align_face, paste_faces
from inference_service.restoration.base import Restorer, WeightsMissing
from inference_service.restoration.gfpgan import GfpganRestorer, faces_to_tensor, tensor_to_faces

TWO_FACES = (slice(100, 480), slice(0, 440))  # rows, columns of t1.jpg


def warped_square(affine: np.ndarray, shape: tuple[int, ...], size: int = 512, grow: int = 2) -> np.ndarray:
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    inverse = cv2.invertAffineTransform(affine)
    polygon = corners @ inverse[:, :2].T + inverse[:, 2]
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round(polygon).astype(np.int32), 1)
    return cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)


@pytest.fixture(scope="module")
def restorer(gfpgan_checkpoint: Path, offline: None) -> GfpganRestorer:
    digest = hashlib.sha256(gfpgan_checkpoint.read_bytes()).hexdigest()
    restorer = GfpganRestorer(gfpgan_checkpoint, sha256=digest.upper(), device="cpu", batch_size=2)
    restorer.load()
    return restorer


@pytest.fixture(scope="module")
def two_faces(load_photo: Callable[[str], np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(load_photo("t1.jpg")[TWO_FACES])


@pytest.fixture(scope="module")
def restored(
    restorer: GfpganRestorer, two_faces: np.ndarray, dlib_landmarks5: Callable[..., list[np.ndarray]], offline: None
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    landmarks = dlib_landmarks5(two_faces)
    assert len(landmarks) == 2
    aligned = [align_face(two_faces, points) for points in landmarks]
    crops = [crop for crop, _ in aligned]
    return crops, [affine for _, affine in aligned], restorer.restore_faces(crops)


def test_the_released_checkpoint_layout_loads_on_cpu_in_full_precision(
    restorer: GfpganRestorer, gfpgan_checkpoint: Path
) -> None:
    assert isinstance(restorer, Restorer)
    assert restorer.loaded and restorer.name == "gfpgan"
    assert restorer.model_id == "gfpgan-" + hashlib.sha256(gfpgan_checkpoint.read_bytes()).hexdigest()[:12]
    assert restorer.device == torch.device("cpu")
    assert restorer.half is False
    assert all(p.dtype == torch.float32 for p in restorer._model.parameters())
    restorer.load()  # a second load is a no-op
    assert restorer.loaded


def test_half_precision_stays_off_on_cpu_even_when_asked(gfpgan_checkpoint: Path) -> None:
    restorer = GfpganRestorer(gfpgan_checkpoint, device="cpu", half="true")
    restorer.load()
    assert restorer.half is False
    assert next(restorer._model.parameters()).dtype == torch.float32


def test_two_faces_restore_and_paste_back_into_the_photo(
    two_faces: np.ndarray, restored: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]
) -> None:
    crops, affines, outputs = restored
    assert [face.shape for face in outputs] == [(512, 512, 3)] * 2
    assert all(face.dtype == np.uint8 for face in outputs)
    result = paste_faces(two_faces, outputs, affines)
    assert result.shape == two_faces.shape and result.dtype == np.uint8
    assert not np.isnan(result.astype(np.float32)).any()

    squares = [warped_square(affine, two_faces.shape) for affine in affines]
    outside = ~(squares[0] | squares[1])
    assert outside.mean() > 0.3  # there is background left to check
    np.testing.assert_array_equal(result[outside], two_faces[outside])

    changed = (result != two_faces).any(axis=2)
    for crop, output, affine in zip(crops, outputs, affines, strict=True):
        assert (output != crop).any(axis=2).mean() > 0.5
        # the middle of the aligned face (crop 128..384) is replaced, not feathered
        inner = np.zeros((512, 512), np.float32)
        inner[128:384, 128:384] = 1
        core = cv2.warpAffine(inner, cv2.invertAffineTransform(affine), two_faces.shape[1::-1]) > 0.99
        assert core.sum() > 1000
        assert changed[core].mean() > 0.9


def test_batching_keeps_each_face_with_its_own_result(
    restorer: GfpganRestorer, restored: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]
) -> None:
    """Restored alone, the second face comes out as it did in the batch of two: faces stay in
    order and the fixed noise maps make the result repeatable."""
    crops, _, outputs = restored
    alone = restorer.restore_faces([crops[1]])[0]
    assert np.abs(alone.astype(np.int16) - outputs[1].astype(np.int16)).max() <= 1
    assert np.abs(outputs[0].astype(np.int16) - outputs[1].astype(np.int16)).mean() > 1


class Negate(torch.nn.Module):
    """Stands in for the network where only the plumbing is under test: out = -in."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.batches.append(x.shape[0])
        return -x, []


def stand_in_restorer(tmp_path: Path, batch_size: int) -> tuple[GfpganRestorer, Negate]:
    restorer = GfpganRestorer(tmp_path / "unused.pth", device="cpu", batch_size=batch_size)
    net = Negate()
    restorer._model = net  # loaded already: load() leaves it alone
    return restorer, net


def test_faces_are_split_into_batches_of_batch_size(tmp_path: Path) -> None:
    restorer, net = stand_in_restorer(tmp_path, batch_size=2)
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(5)]
    outputs = restorer.restore_faces(faces)
    assert net.batches == [2, 2, 1]
    for face, output in zip(faces, outputs, strict=True):
        np.testing.assert_array_equal(output, 255 - face)
    assert restorer.restore_faces([]) == []


def test_a_whole_image_is_restored_as_one_face_at_its_own_size(tmp_path: Path) -> None:
    restorer, net = stand_in_restorer(tmp_path, batch_size=4)
    image = np.full((300, 200, 3), (10, 100, 200), np.uint8)
    output = restorer.restore(image)
    assert output.shape == image.shape and net.batches == [1]
    np.testing.assert_array_equal(output, 255 - image)


def test_tensors_use_gfpgans_minus_one_to_one_range_in_rgb_order() -> None:
    face = np.zeros((512, 512, 3), np.uint8)
    face[..., 0] = 255  # blue in BGR
    tensor = faces_to_tensor([face], torch.device("cpu"), torch.float32)
    assert tensor.shape == (1, 3, 512, 512)
    assert tensor[0, 2].eq(1.0).all() and tensor[0, 0].eq(-1.0).all()  # RGB: blue is channel 2
    np.testing.assert_array_equal(tensor_to_faces(tensor, tensor)[0], face)


def test_nan_keeps_the_input_pixel_and_overshoot_is_clamped() -> None:
    inputs = faces_to_tensor([np.full((512, 512, 3), 100, np.uint8)], torch.device("cpu"), torch.float32)
    output = torch.zeros_like(inputs)
    output[0, :, 0, 0] = float("nan")
    output[0, :, 0, 1] = float("inf")
    output[0, :, 0, 2] = -float("inf")
    output[0, :, 0, 3] = 7.0
    face = tensor_to_faces(output, inputs)[0]
    assert face.dtype == np.uint8
    assert face[0, :4].tolist() == [[100] * 3, [255] * 3, [0] * 3, [255] * 3]
    assert (face[1:] == 128).all()


def test_a_missing_weights_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "models" / "GFPGANv1.4.pth"
    with pytest.raises(WeightsMissing, match=r"GFPGANv1\.4\.pth") as raised:
        GfpganRestorer(path).load()
    assert isinstance(raised.value, FileNotFoundError)
    assert raised.value.path == path and str(path) in str(raised.value)


def test_a_file_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "GFPGANv1.4.pth"
    path.write_bytes(b"not the weights")
    actual = hashlib.sha256(b"not the weights").hexdigest()
    with pytest.raises(ValueError, match="sha256") as raised:
        GfpganRestorer(path, sha256="0" * 64).load()
    assert "0" * 64 in str(raised.value) and actual in str(raised.value)


@pytest.mark.parametrize("damage", ["not a checkpoint", "truncated"])
def test_a_file_that_is_not_a_readable_checkpoint_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "GFPGANv1.4.pth"
    if damage == "truncated":
        torch.save({"params_ema": {"toRGB.0.weight": torch.zeros(3, 256, 1, 1)}}, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ValueError, match="could not be read as a checkpoint"):
        GfpganRestorer(path, device="cpu").load()


def test_a_checkpoint_spandrel_does_not_know_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": {"encoder.weight": torch.randn(4, 4), "head.bias": torch.randn(4)}}, path)
    with pytest.raises(ValueError, match="not a GFPGAN"):
        GfpganRestorer(path, device="cpu").load()


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=2).state_dict()}, path)
    restorer = GfpganRestorer(path, device="cpu")
    with pytest.raises(ValueError, match=r"Compact.*not GFPGAN"):
        restorer.load()
    assert not restorer.loaded


def test_bad_settings_and_bad_crops_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="half"):
        GfpganRestorer(tmp_path / "w.pth", half="yes")
    with pytest.raises(ValueError, match="batch_size"):
        GfpganRestorer(tmp_path / "w.pth", batch_size=0)
    restorer, _ = stand_in_restorer(tmp_path, batch_size=1)
    with pytest.raises(ValueError, match="512x512"):
        restorer.restore_faces([np.zeros((256, 256, 3), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        restorer.restore_faces([np.zeros((512, 512, 3), np.float32)])
