"""Align faces to the FFHQ template and paste restored crops back, as facexlib's
FaceRestoreHelper does for GFPGAN (align_warp_face, paste_faces_to_input_image).

Two differences from facexlib: each face is pasted inside the bounding box of its warped
square only (the cost follows the face, not the photo), and only pixels whose feathered
mask is above zero are written, so everything outside the faces stays byte-identical."""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_SIZE = 512

# facexlib's face_template for a 512x512 crop: left eye, right eye, nose tip, left and right
# mouth corners, "left" as seen in the image.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)

# What facexlib fills the crop with where the square reaches past the photo.
BORDER_GREY = (135, 133, 132)


def face_template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    return FFHQ_TEMPLATE_512 * np.float32(size / TEMPLATE_SIZE)


def align_face(
    image_bgr: np.ndarray, landmarks5: np.ndarray, size: int = TEMPLATE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """The size x size crop of the face whose five landmarks are given (image pixels, FFHQ
    order), and the 2x3 similarity transform from image to crop coordinates."""
    points = np.asarray(landmarks5, dtype=np.float32)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"expected five finite (x, y) landmarks, got shape {points.shape}")
    affine, _ = cv2.estimateAffinePartial2D(points, face_template(size), method=cv2.LMEDS)
    if affine is None:
        raise ValueError("landmarks are degenerate: no similarity transform maps them to the template")
    crop = cv2.warpAffine(image_bgr, affine, (size, size), borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_GREY)
    return crop, affine


def paste_faces(image_bgr: np.ndarray, restored_crops: list[np.ndarray], affines: list[np.ndarray]) -> np.ndarray:
    """The image with each restored crop warped back through the inverse of its affine and
    blended in with a feathered mask; pixels outside every mask are left exactly as they were."""
    if len(restored_crops) != len(affines):
        raise ValueError(f"{len(restored_crops)} crops but {len(affines)} affines")
    output = image_bgr.copy()
    for crop, affine in zip(restored_crops, affines, strict=True):
        _paste_one(output, crop, np.asarray(affine, dtype=np.float64))
    return output


def _paste_one(output: np.ndarray, crop: np.ndarray, affine: np.ndarray) -> None:
    height, width = output.shape[:2]
    crop_h, crop_w = crop.shape[:2]
    inverse = cv2.invertAffineTransform(affine)
    corners = np.array([[0, 0, 1], [crop_w, 0, 1], [0, crop_h, 1], [crop_w, crop_h, 1]], dtype=np.float64)
    mapped = corners @ inverse.T
    x0, y0 = np.floor(mapped.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(mapped.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return  # the face lies wholly outside the image
    # Work in the region the square covers: shift the inverse so (x0, y0) is the origin.
    inverse[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)

    back = cv2.warpAffine(crop, inverse, roi_size).astype(np.float32)
    mask = cv2.warpAffine(np.ones((crop_h, crop_w), np.float32), inverse, roi_size)
    # Remove the interpolated rim where the square's edge blends with black.
    mask = cv2.erode(mask, np.ones((2, 2), np.uint8))
    # Feather in proportion to the face: facexlib's fusion edge is 1/20 of the mask's side.
    edge = max(1, int(float(mask.sum()) ** 0.5) // 20)
    core = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
    soft = cv2.GaussianBlur(core, (2 * edge + 1, 2 * edge + 1), 0)

    region = output[y0:y1, x0:x1]
    alpha = soft[..., None]
    blended = alpha * (mask[..., None] * back) + (1.0 - alpha) * region.astype(np.float32)
    touched = soft > 0
    region[touched] = np.clip(np.rint(blended[touched]), 0, 255).astype(np.uint8)
