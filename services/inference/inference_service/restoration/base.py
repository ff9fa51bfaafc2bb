"""The interface every restoration back-end implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Restorer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def model_id(self) -> str:
        """Names the exact weights (or algorithm version) that produced a result."""
        ...

    def restore(self, image_bgr: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 BGR in, uint8 HxWx3 BGR out, same size."""
        ...

    def restore_faces(self, faces: list[np.ndarray], fidelity: float | None = None) -> list[np.ndarray]:
        """Aligned 512x512 uint8 BGR face crops in, restored crops of the same shape out,
        in the same order.

        fidelity: how close to the input the result stays, in [0, 1] (0 strongest restoration,
        1 closest to the input); None is the restorer's default. A restorer without such a dial
        (GFPGAN, classical) ignores it, but still refuses a value outside [0, 1]."""
        ...


class WeightsMissing(FileNotFoundError):
    """A restorer's weights file is not on disk; nothing is downloaded in its place."""

    def __init__(self, path: Path, hint: str = "") -> None:
        self.path = path
        message = f"restoration weights missing: {path}"
        super().__init__(f"{message} ({hint})" if hint else message)


def check_bgr(image_bgr: np.ndarray) -> None:
    """Raise ValueError unless the image is what Restorer.restore accepts."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
        raise ValueError("expected a uint8 numpy array")
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image_bgr.shape}")
    if image_bgr.shape[0] < 1 or image_bgr.shape[1] < 1:
        raise ValueError("empty image")


def check_fidelity(fidelity: float) -> float:
    """A fidelity weight is a number in [0, 1]; anything else (NaN included) is a ValueError."""
    value = float(fidelity)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"fidelity must be between 0 and 1, got {fidelity!r}")
    return value
