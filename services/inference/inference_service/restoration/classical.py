"""A weight-free restorer built from classical filters: noise-adaptive non-local-means
denoising; on aligned face crops, blind Wiener deconvolution of the lightness (deblur.py);
CLAHE on lightness for low-contrast photos; and a thresholded unsharp mask on lightness where
nothing was deconvolved."""

from __future__ import annotations

import cv2
import numpy as np

from inference_service.restoration.base import check_bgr, check_fidelity
from inference_service.restoration.deblur import FaceDeblurrer


def estimate_noise(image_bgr: np.ndarray, block: int = 8, percentile: float = 25.0) -> float:
    """Rough standard deviation of the noise left in the image, in grey levels.

    Takes the high-pass residual (grey minus a Gaussian blur), measures its spread in
    small blocks, and keeps a low percentile of those: the flattest blocks hold noise
    and little detail. JPEG compression removes much of the finest noise, which is why
    the residual is taken against a fairly wide blur rather than a 3x3 Laplacian."""
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    residual = grey - cv2.GaussianBlur(grey, (0, 0), 1.5)
    rows, cols = grey.shape[0] // block, grey.shape[1] // block
    if rows == 0 or cols == 0:
        return float(residual.std())
    tiles = residual[: rows * block, : cols * block].reshape(rows, block, cols, block)
    return float(np.percentile(tiles.std(axis=(1, 3)), percentile))


class ClassicalRestorer:
    name = "classical"
    version = "2"
    model_id = f"classical-opencv-v{version}"

    def __init__(
        self,
        *,
        denoise_gain: float = 1.5,
        denoise_offset: float = 0.5,
        min_noise: float = 0.5,
        max_denoise: float = 15.0,
        search_window: int = 11,
        clahe_clip: float = 2.0,
        clahe_tiles: int = 8,
        clahe_strength: float = 1.0,
        contrast_target: float = 160.0,
        min_contrast: float = 16.0,
        sharpen_sigma: float = 2.5,
        sharpen_amount: float = 0.5,
        sharpen_threshold: float = 1.0,
        deblurrer: FaceDeblurrer | None = None,
        deblur_faces: bool = True,
    ) -> None:
        """deblur_faces: deconvolve aligned face crops (restore_faces); whole images (restore)
        never are, as their blur cannot be measured on a face's known layout."""
        self.denoise_gain = denoise_gain
        self.denoise_offset = denoise_offset
        self.min_noise = min_noise
        self.max_denoise = max_denoise
        self.search_window = search_window
        self.clahe_clip = clahe_clip
        self.clahe_tiles = clahe_tiles
        self.clahe_strength = clahe_strength
        self.contrast_target = contrast_target
        self.min_contrast = min_contrast
        self.sharpen_sigma = sharpen_sigma
        self.sharpen_amount = sharpen_amount
        self.sharpen_threshold = sharpen_threshold
        self.deblurrer = (deblurrer or FaceDeblurrer()) if deblur_faces else None

    def denoise_strength(self, image_bgr: np.ndarray) -> float:
        """The filter strength h for fastNlMeans; 0 means the image is left as it is."""
        # gain and offset were fitted to the best fixed h on blurred, noisy, JPEG-compressed
        # face photos at several noise levels; the estimate reads low after JPEG, hence > 1.
        noise = estimate_noise(image_bgr)
        if noise < self.min_noise:
            return 0.0
        return float(min(self.max_denoise, self.denoise_gain * noise + self.denoise_offset))

    def restore(self, image_bgr: np.ndarray) -> np.ndarray:
        check_bgr(image_bgr)
        return self._restore(image_bgr, deblur=False)

    def restore_faces(self, faces: list[np.ndarray], fidelity: float | None = None) -> list[np.ndarray]:
        """Each aligned crop restored, deblurred first. No fidelity dial: a valid one is ignored."""
        if fidelity is not None:
            check_fidelity(fidelity)
        for face in faces:
            check_bgr(face)
        return [self._restore(face, deblur=self.deblurrer is not None) for face in faces]

    def _restore(self, image: np.ndarray, deblur: bool) -> np.ndarray:
        h = self.denoise_strength(image)
        if h > 0:
            image = cv2.fastNlMeansDenoisingColored(image, None, h, h, 7, self.search_window)

        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
        lightness = lab[..., 0].astype(np.float32)
        deconvolved = False
        if deblur and self.deblurrer is not None:
            result = self.deblurrer.deblur(lightness)
            lightness, deconvolved = result.lightness, result.sigma > 0
        lightness_u8 = np.clip(lightness + 0.5, 0, 255).astype(np.uint8) if deconvolved else lab[..., 0]
        lightness = self._local_contrast(lightness_u8, lightness)
        if not deconvolved:  # the deconvolution sharpened already; an unsharp mask on top overshoots
            lightness = self._sharpen(lightness)
        lab[..., 0] = np.clip(lightness + 0.5, 0, 255).astype(np.uint8)
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)

    def contrast_strength(self, lightness_u8: np.ndarray) -> float:
        """How much of the CLAHE result to blend in: none for a photo whose lightness
        already spans contrast_target levels (1st to 99th percentile), more the flatter it is.
        Equalising a well-exposed photo would only shift its tones away from the original;
        a nearly uniform image (under min_contrast) has nothing to stretch and is left alone,
        since CLAHE would move its single tone."""
        if self.clahe_clip <= 0 or self.contrast_target <= 0 or min(lightness_u8.shape) < 16:
            return 0.0
        low, high = np.percentile(lightness_u8, (1, 99))
        spread = float(high - low)
        if spread < self.min_contrast:
            return 0.0
        flatness = (self.contrast_target - spread) / self.contrast_target
        return self.clahe_strength * min(1.0, max(0.0, flatness))

    def _local_contrast(self, lightness_u8: np.ndarray, lightness: np.ndarray) -> np.ndarray:
        strength = self.contrast_strength(lightness_u8)
        if strength <= 0:
            return lightness
        # Tiles of at least ~32 px: smaller ones equalise noise rather than contrast.
        tiles = max(1, min(self.clahe_tiles, min(lightness_u8.shape) // 32))
        clahe = cv2.createCLAHE(clipLimit=self.clahe_clip, tileGridSize=(tiles, tiles))
        equalised = clahe.apply(lightness_u8).astype(np.float32)
        return lightness + strength * (equalised - lightness)

    def _sharpen(self, lightness: np.ndarray) -> np.ndarray:
        if self.sharpen_amount <= 0:
            return lightness
        detail = lightness - cv2.GaussianBlur(lightness, (0, 0), self.sharpen_sigma)
        # Soft threshold: differences as small as leftover noise are not amplified.
        detail = np.sign(detail) * np.maximum(np.abs(detail) - self.sharpen_threshold, 0.0)
        return lightness + self.sharpen_amount * detail
