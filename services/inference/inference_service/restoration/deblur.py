"""Blind deblurring of an aligned face crop's lightness: a Gaussian blur estimated from the
face's own edges, undone by Wiener deconvolution, with a guard against halos and one against
amplified noise.

Blur estimate (the re-blur gradient ratio of Zhuo and Sim, "Defocus map estimation from a
single image", 2011): at an edge blurred by a Gaussian of sigma s, blurring again by s0 lowers
the gradient's peak by R = sqrt(s^2 + s0^2) / s, so s = s0 / sqrt(R^2 - 1). The median over
the strongest edges of the face's middle (eyes, nose, mouth: where the FFHQ template puts them)
is the crop's blur. A sharp photo's aligned crop is not blur-free: it is an enlargement of the
face, whose interpolation reads as a sigma of about REFERENCE_SIGMA (measured on the aligned
faces of the photos the insightface wheel ships, 2.35 to 2.85). Only the blur beyond that is
deconvolved, so a sharp face is left alone and a blurred one is brought back towards its
sharp crop rather than past it.

Guards: every deconvolved pixel stays within the range of its input neighbourhood (the width of
the kernel) plus a small margin, which removes Wiener's ringing (halos) at strong edges while
keeping the steeper edges; and when the deconvolution makes the flattest parts of the face
(skin) grow more than max_flat_gain times as textured, which is noise or JPEG blocks being
amplified rather than detail, it is blended back until they do not."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import fft
from skimage.feature import canny

REFERENCE_SIZE = 512
REFERENCE_SIGMA = 2.6
# The middle of the face in the 512x512 FFHQ-aligned crop: rows, columns.
FACE_MIDDLE = ((150, 430), (140, 372))
FLAT_BLOCK = 16


@dataclass(frozen=True)
class Deblurred:
    lightness: np.ndarray
    estimated_sigma: float | None  # the crop's blur as measured; None: too few edges to tell
    sigma: float  # the Gaussian deconvolved; 0 when the crop was left as it was
    strength: float  # the share of the deconvolution kept by the noise guard


def _gradient(image: np.ndarray) -> np.ndarray:
    return np.hypot(cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3))


def wiener_deconvolve(image: np.ndarray, sigma: float, balance: float) -> np.ndarray:
    """Wiener deconvolution of a Gaussian blur, regularised by the Laplacian (as
    skimage.restoration.wiener does it), computed in float32 with the Gaussian's transfer
    function in closed form. The image is taken as periodic: pad it first."""
    rows, cols = image.shape
    u = fft.fftfreq(rows).astype(np.float32)[:, None]
    v = fft.rfftfreq(cols).astype(np.float32)[None, :]
    blur = np.exp(np.float32(-2.0 * np.pi**2 * sigma**2) * (u * u + v * v))
    laplacian = 4.0 - 2.0 * np.cos(np.float32(2 * np.pi) * u) - 2.0 * np.cos(np.float32(2 * np.pi) * v)
    gain = blur / (blur * blur + np.float32(balance) * laplacian * laplacian)
    return fft.irfft2(fft.rfft2(image, workers=-1) * gain, s=image.shape, workers=-1).astype(np.float32)


class FaceDeblurrer:
    def __init__(
        self,
        *,
        reference_sigma: float = REFERENCE_SIGMA,
        # Sharp faces' crops measure REFERENCE_SIGMA give or take 0.3, i.e. up to about 1.2 of
        # "excess" blur: only more than that is taken for blur rather than the estimate's spread.
        min_sigma: float = 1.5,
        max_sigma: float = 8.0,
        probe_sigma: float = 2.0,
        balance: float = 0.05,
        halo_margin: float = 2.0,
        max_flat_gain: float = 1.25,
        min_edges: int = 50,
    ) -> None:
        self.reference_sigma = reference_sigma
        self.min_sigma = min_sigma
        self.max_sigma = max_sigma
        self.probe_sigma = probe_sigma
        self.balance = balance
        self.halo_margin = halo_margin
        self.max_flat_gain = max_flat_gain
        self.min_edges = min_edges

    @staticmethod
    def _middle(shape: tuple[int, ...]) -> tuple[slice, slice]:
        (top, bottom), (left, right) = FACE_MIDDLE
        rows, cols = shape[0] / REFERENCE_SIZE, shape[1] / REFERENCE_SIZE
        return slice(int(top * rows), int(bottom * rows)), slice(int(left * cols), int(right * cols))

    def estimate_sigma(self, lightness: np.ndarray) -> float | None:
        """The Gaussian blur of the crop, in its pixels; None when its middle has too few edges."""
        middle = self._middle(lightness.shape)
        region = lightness[middle]
        if region.size == 0 or float(np.ptp(region)) < 8.0:
            return None
        sharp = _gradient(lightness)[middle]
        reblurred = _gradient(cv2.GaussianBlur(lightness, (0, 0), self.probe_sigma))[middle]
        edges = canny(region, sigma=2.0, low_threshold=0.75, high_threshold=0.9, use_quantiles=True)
        ratio = sharp[edges] / np.maximum(reblurred[edges], 1e-3)
        ratio = ratio[ratio > 1.001]
        if ratio.size < self.min_edges:
            return None
        return float(np.median(self.probe_sigma / np.sqrt(ratio**2 - 1.0)))

    def _flat_texture(self, lightness: np.ndarray) -> float:
        """Spread of the high-pass residual in the flattest quarter of the face's blocks."""
        residual = (lightness - cv2.GaussianBlur(lightness, (0, 0), 2.0))[self._middle(lightness.shape)]
        rows, cols = residual.shape[0] // FLAT_BLOCK, residual.shape[1] // FLAT_BLOCK
        if rows == 0 or cols == 0:
            return float(residual.std())
        tiles = residual[: rows * FLAT_BLOCK, : cols * FLAT_BLOCK].reshape(rows, FLAT_BLOCK, cols, FLAT_BLOCK)
        return float(np.percentile(tiles.std(axis=(1, 3)), 25))

    def deblur(self, lightness: np.ndarray) -> Deblurred:
        """lightness: float32 HxW in [0, 255], an aligned face crop's. Returns it deblurred."""
        lightness = np.ascontiguousarray(lightness, dtype=np.float32)
        scale = lightness.shape[0] / REFERENCE_SIZE
        estimated = self.estimate_sigma(lightness)
        if estimated is None:
            return Deblurred(lightness, None, 0.0, 0.0)
        reference = self.reference_sigma * scale
        sigma = float(min(self.max_sigma * scale, np.sqrt(max(0.0, estimated**2 - reference**2))))
        if sigma < self.min_sigma:
            return Deblurred(lightness, estimated, 0.0, 0.0)

        pad = 2 * int(np.ceil(3 * sigma))  # reflected border: the FFT's wrap-around stays outside
        padded = np.pad(lightness, pad, mode="reflect")
        restored = wiener_deconvolve(padded, sigma, self.balance)[pad:-pad, pad:-pad]

        window = np.ones((2 * int(np.ceil(sigma)) + 1,) * 2, np.uint8)
        low = cv2.erode(lightness, window) - self.halo_margin
        high = cv2.dilate(lightness, window) + self.halo_margin
        restored = np.clip(restored, low, high)

        strength = 1.0
        gain = self._flat_texture(restored) / max(self._flat_texture(lightness), 1e-3)
        if gain > self.max_flat_gain:
            strength = (self.max_flat_gain - 1.0) / (gain - 1.0)
            restored = lightness + np.float32(strength) * (restored - lightness)
        return Deblurred(restored.astype(np.float32), estimated, sigma, strength)
