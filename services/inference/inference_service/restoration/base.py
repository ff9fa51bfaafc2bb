"""The interface every restoration back-end implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Restorer(Protocol):
    name: str

    def restore(self, image_bgr: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 BGR in, uint8 HxWx3 BGR out, same size."""
        ...


def check_bgr(image_bgr: np.ndarray) -> None:
    """Raise ValueError unless the image is what Restorer.restore accepts."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
        raise ValueError("expected a uint8 numpy array")
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image_bgr.shape}")
    if image_bgr.shape[0] < 1 or image_bgr.shape[1] < 1:
        raise ValueError("empty image")
