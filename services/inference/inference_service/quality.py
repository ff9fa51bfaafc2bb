"""Image measurements used to report on a restoration: sharpness, PSNR, SSIM, and the
thumbnail shown beside the result. (Faces are found by the face analysers.)"""

from __future__ import annotations

import cv2
import numpy as np


def _grey(image_bgr: np.ndarray) -> np.ndarray:
    if image_bgr.ndim == 2:
        return image_bgr
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def sharpness(image_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher means more fine detail."""
    return float(cv2.Laplacian(_grey(image_bgr), cv2.CV_64F).var())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over all channels; inf for identical images."""
    _same_shape(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM (Wang et al. 2004) on the grey images: 11x11 Gaussian window, sigma 1.5,
    K1 = 0.01, K2 = 0.03."""
    _same_shape(a, b)
    x = _grey(a).astype(np.float64)
    y = _grey(b).astype(np.float64)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = blur(x * x) - mu_xx
    var_y = blur(y * y) - mu_yy
    cov_xy = blur(x * y) - mu_xy
    ssim_map = ((2 * mu_xy + c1) * (2 * cov_xy + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def _fit(image_bgr: np.ndarray, max_side: int) -> np.ndarray:
    if max_side < 1:
        raise ValueError("max_side must be positive")
    height, width = image_bgr.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image_bgr
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)


def make_thumbnail(image_bgr: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Scale down so the longer side is max_side, keeping the aspect ratio; an image that
    already fits comes back as a copy at its own size."""
    thumbnail = _fit(image_bgr, max_side)
    return thumbnail.copy() if thumbnail is image_bgr else thumbnail
