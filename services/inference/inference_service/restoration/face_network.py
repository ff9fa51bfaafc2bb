"""What the face restoration networks (GFPGAN, CodeFormer) share: the weights file checked
(present, sha256 when pinned) and read through spandrel's loader, device and precision chosen,
aligned 512x512 crops run through the network in batches, and the tensor convention both use
(RGB scaled to [-1, 1] in and out, as GFPGANer.enhance and CodeFormer's inference script do).

spandrel reads checkpoints with a restricted unpickler and never downloads anything; neither
does this module: a missing file is WeightsMissing, naming it."""

from __future__ import annotations

import hashlib
import pickle  # only for its exception type: spandrel unpickles through a whitelist
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np
import torch

from facerestore_common.logging import get_logger
from inference_service.restoration.base import WeightsMissing, check_bgr, check_fidelity

if TYPE_CHECKING:
    from spandrel import ArchRegistry, ImageModelDescriptor

log = get_logger(__name__)

FACE_SIZE = 512
HALF_CHOICES = ("auto", "true", "false")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return resolved


def faces_to_tensor(faces: list[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 BGR HxWx3 crops to an NCHW RGB tensor in [-1, 1]."""
    batch = np.ascontiguousarray(np.stack(faces)[..., ::-1].transpose(0, 3, 1, 2))
    return torch.from_numpy(batch).to(device=device).to(dtype).div_(127.5).sub_(1.0)


def tensor_to_faces(output: torch.Tensor, inputs: torch.Tensor) -> list[np.ndarray]:
    """An NCHW RGB tensor in [-1, 1] to uint8 BGR crops. A NaN takes the input's value at that
    place; infinities and overshoot are clamped."""
    output = torch.where(torch.isnan(output), inputs, output).float().clamp_(-1.0, 1.0)
    pixels = output.add_(1.0).mul_(127.5).round_().to(torch.uint8).cpu().numpy()
    return [np.ascontiguousarray(face.transpose(1, 2, 0)[..., ::-1]) for face in pixels]


def read_checkpoint(
    path: Path, expected_sha256: str | None, device: torch.device, architecture_id: str, registry: ArchRegistry
) -> tuple[ImageModelDescriptor[Any], str]:
    """The network in the weights file at path, as spandrel describes it, and the file's sha256.
    ValueError when the digest differs from the pinned one, the file is no readable checkpoint,
    or it holds another architecture than architecture_id."""
    actual = file_sha256(path)
    if expected_sha256 and actual != expected_sha256:
        raise ValueError(f"sha256 mismatch for {path}: expected {expected_sha256}, actual {actual}")

    import spandrel  # deferred: importing it registers every architecture (~1 s)

    loader = spandrel.ModelLoader(device, registry=registry)  # load_from_file, in its two steps
    try:
        state_dict = loader.load_state_dict_from_file(path)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        raise ValueError(f"{path} could not be read as a checkpoint: {error}") from error
    try:
        descriptor = loader.load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as error:
        raise ValueError(f"{path} is not a {architecture_id} checkpoint: spandrel does not recognise it") from error
    if descriptor.architecture.id != architecture_id:
        raise ValueError(
            f"{path} is a {descriptor.architecture.name} checkpoint ({descriptor.architecture.id}), "
            f"not {architecture_id}"
        )
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ValueError(f"{path}: spandrel describes {architecture_id} as a {type(descriptor).__name__}")
    return descriptor, actual


class FaceNetworkRestorer:
    """A Restorer running a spandrel-loaded face network on aligned 512x512 crops. Subclasses
    name the architecture and make the forward call; fidelity is theirs to use or ignore."""

    name: ClassVar[str]
    architecture_id: ClassVar[str]
    weights_hint: ClassVar[str]

    def __init__(
        self,
        model_path: Path,
        sha256: str | None = None,
        device: str = "auto",
        half: str = "auto",
        batch_size: int = 4,
    ) -> None:
        """device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
        half: fp16 weights, only ever on CUDA. "auto" follows spandrel's supports_half (False for
        GFPGAN and CodeFormer: fp16 untested upstream), so they run in fp32; "true" forces fp16 on
        CUDA; "false" never. sha256: when given, a file with another digest is refused."""
        if half not in HALF_CHOICES:
            raise ValueError(f"half must be one of {HALF_CHOICES}, got {half!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_path = Path(model_path)
        self.expected_sha256 = sha256.strip().lower() if sha256 else None
        self.device_setting = device
        self.half_setting = half
        self.batch_size = batch_size
        # The weights' digest is known for certain only once load() has read the file.
        self.model_id = f"{self.name}-{self.expected_sha256[:12]}" if self.expected_sha256 else self.name
        self.sha256: str | None = None
        self.device = torch.device("cpu")
        self.half = False
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._model = self._load()

    def _registry(self) -> ArchRegistry:
        from spandrel import MAIN_REGISTRY

        return MAIN_REGISTRY

    def _load(self) -> Any:
        path = self.model_path
        if not path.is_file():
            raise WeightsMissing(path, self.weights_hint)
        device = resolve_device(self.device_setting)
        descriptor, actual = read_checkpoint(path, self.expected_sha256, device, self.architecture_id, self._registry())
        half = device.type == "cuda" and (
            self.half_setting == "true" or (self.half_setting == "auto" and descriptor.supports_half)
        )
        model = descriptor.model
        model.eval().requires_grad_(False)
        if half:
            model.half()
        self.device, self.half, self.sha256 = device, half, actual
        self.model_id = f"{self.name}-{actual[:12]}"
        log.info(f"{self.name}_loaded", model_path=str(path), model_id=self.model_id, device=str(device), half=half)
        return model

    def _forward(self, inputs: torch.Tensor, fidelity: float | None) -> torch.Tensor:
        """The restored batch, NCHW RGB in [-1, 1], for an input batch of the same form."""
        raise NotImplementedError

    def _fidelity(self, fidelity: float | None) -> float | None:
        """The fidelity this network runs with when a call asks for fidelity (None: none asked)."""
        return None if fidelity is None else check_fidelity(fidelity)

    def restore_faces(self, faces: list[np.ndarray], fidelity: float | None = None) -> list[np.ndarray]:
        for face in faces:
            check_bgr(face)
            if face.shape[:2] != (FACE_SIZE, FACE_SIZE):
                raise ValueError(f"expected {FACE_SIZE}x{FACE_SIZE} aligned crops, got {face.shape[:2]}")
        weight = self._fidelity(fidelity)
        if not faces:
            return []
        self.load()
        dtype = torch.float16 if self.half else torch.float32
        restored: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(faces), self.batch_size):
                inputs = faces_to_tensor(faces[start : start + self.batch_size], self.device, dtype)
                output = self._forward(inputs, weight)
                if torch.isnan(output).any():
                    log.warning(f"{self.name}_nan_output", model_id=self.model_id)
                restored.extend(tensor_to_faces(output, inputs))
        return restored

    def restore(self, image_bgr: np.ndarray, fidelity: float | None = None) -> np.ndarray:
        """The whole image taken as one face crop: resized to 512, restored, resized back."""
        check_bgr(image_bgr)
        height, width = image_bgr.shape[:2]
        face = cv2.resize(image_bgr, (FACE_SIZE, FACE_SIZE), interpolation=_interpolation(width, FACE_SIZE))
        restored = self.restore_faces([face], fidelity)[0]
        return cv2.resize(restored, (width, height), interpolation=_interpolation(FACE_SIZE, width))


def _interpolation(source: int, target: int) -> int:
    """Area averaging to shrink (no aliasing), bicubic to enlarge."""
    return cv2.INTER_AREA if target < source else cv2.INTER_CUBIC
