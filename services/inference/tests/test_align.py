"""Alignment to the FFHQ template and paste-back, on the six faces of t1.jpg.

Landmarks come from dlib's HOG detector and 68-point predictor, run directly (conftest's
dlib_landmarks5); the photo and the predictor's file are located in their wheels, never
imported."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from inference_service.faces.align import FFHQ_TEMPLATE_512, align_face, paste_faces

LandmarkFinder = Callable[..., list[np.ndarray]]


def warped_square(affine: np.ndarray, shape: tuple[int, ...], size: int = 512, grow: int = 2) -> np.ndarray:
    """Boolean mask of the image pixels the crop's square covers, grown by `grow` pixels."""
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    inverse = cv2.invertAffineTransform(affine)
    polygon = corners @ inverse[:, :2].T + inverse[:, 2]
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round(polygon).astype(np.int32), 1)
    return cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)


@pytest.fixture(scope="module")
def photo(load_photo: Callable[[str], np.ndarray]) -> np.ndarray:
    return load_photo("t1.jpg")


@pytest.fixture(scope="module")
def faces(photo: np.ndarray, dlib_landmarks5: LandmarkFinder) -> list[tuple[np.ndarray, np.ndarray]]:
    found = dlib_landmarks5(photo)
    assert len(found) == 6
    return [align_face(photo, landmarks) for landmarks in found]


def test_landmarks_a_similarity_away_from_the_template_land_exactly_on_it(photo: np.ndarray) -> None:
    angle, scale, shift = np.deg2rad(20.0), 0.3, np.array([400.0, 300.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (FFHQ_TEMPLATE_512 @ rotation.T + shift).astype(np.float32)
    crop, affine = align_face(photo, landmarks)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    mapped = landmarks @ affine[:, :2].T + affine[:, 2]
    np.testing.assert_allclose(mapped, FFHQ_TEMPLATE_512, atol=0.05)


def test_real_faces_are_fitted_to_the_template_by_a_similarity(
    photo: np.ndarray, dlib_landmarks5: LandmarkFinder
) -> None:
    """A similarity (4 parameters) cannot put 5 points of a real face exactly on the mean
    FFHQ face: a turned head moves the nose and mouth corners off it (up to ~40 px of 512
    on t1.jpg). What it does do is centre and scale the face as the template expects."""

    def spread(points: np.ndarray) -> float:
        return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))

    for landmarks in dlib_landmarks5(photo):
        _, affine = align_face(photo, landmarks)
        # rotation and uniform scale, no shear
        assert affine[0, 0] == pytest.approx(affine[1, 1]) and affine[0, 1] == pytest.approx(-affine[1, 0])
        mapped = landmarks @ affine[:, :2].T + affine[:, 2]
        np.testing.assert_allclose(mapped.mean(axis=0), FFHQ_TEMPLATE_512.mean(axis=0), atol=0.5)
        assert np.linalg.norm(mapped - FFHQ_TEMPLATE_512, axis=1).mean() < 25.0
        # the face is scaled to the template's size (the eyes alone are not: a turned head
        # brings them closer together)
        assert spread(mapped) == pytest.approx(spread(FFHQ_TEMPLATE_512), rel=0.1)


def test_alignment_crops_the_face_the_landmarks_describe(photo: np.ndarray, dlib_landmarks5: LandmarkFinder) -> None:
    """The crop is the image seen through the affine: landmarks found again on the crop sit
    where the affine sends the original ones (to within dlib's own jitter)."""
    errors = []
    for landmarks in dlib_landmarks5(photo):
        crop, affine = align_face(photo, landmarks)
        again = dlib_landmarks5(crop, upsample=0)  # the face fills the crop
        assert len(again) == 1
        mapped = landmarks @ affine[:, :2].T + affine[:, 2]
        errors.append(np.linalg.norm(again[0] - mapped, axis=1))
    assert np.median(errors) < 3.0
    assert np.max(errors) < 15.0


def test_alignment_scales_the_template_with_the_crop_size(photo: np.ndarray, dlib_landmarks5: LandmarkFinder) -> None:
    landmarks = dlib_landmarks5(photo)[0]
    crop, affine = align_face(photo, landmarks, size=256)
    assert crop.shape == (256, 256, 3)
    _, affine_512 = align_face(photo, landmarks)
    np.testing.assert_allclose(affine, affine_512 / 2, rtol=1e-3, atol=1e-2)


def test_degenerate_landmarks_are_refused(photo: np.ndarray) -> None:
    with pytest.raises(ValueError, match="landmarks"):
        align_face(photo, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="landmarks"):
        align_face(photo, np.full((5, 2), np.nan, np.float32))


def test_pasting_unchanged_crops_back_keeps_the_photo(
    photo: np.ndarray, faces: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    pasted = paste_faces(photo, [crop for crop, _ in faces], [affine for _, affine in faces])
    assert pasted.shape == photo.shape and pasted.dtype == np.uint8
    inside = np.zeros(photo.shape[:2], bool)
    for _, affine in faces:
        inside |= warped_square(affine, photo.shape)
    np.testing.assert_array_equal(pasted[~inside], photo[~inside])
    difference = np.abs(pasted.astype(np.int16) - photo.astype(np.int16))
    # two bilinear resamplings (image -> crop -> image) soften the faces a little, no more
    assert difference[inside].mean() < 1.0
    assert np.percentile(difference[inside], 99) <= 6


def test_a_white_crop_changes_only_its_own_face(photo: np.ndarray, faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    crop, affine = faces[2]
    white = np.full_like(crop, 255)
    pasted = paste_faces(photo, [white], [affine])
    changed = (pasted != photo).any(axis=2)
    square = warped_square(affine, photo.shape)
    assert changed.any()
    assert not (changed & ~square).any(), "a pixel outside the face's warped square changed"
    # the centre of the face is replaced outright; the border is feathered, not a hard seam
    centre = np.round(cv2.invertAffineTransform(affine) @ np.array([256.0, 256.0, 1.0])).astype(int)
    assert (pasted[centre[1], centre[0]] == 255).all()
    grey = pasted.astype(np.int16).sum(axis=2)
    partial = changed & (grey < 3 * 255) & (grey > photo.astype(np.int16).sum(axis=2))
    assert partial.sum() > 0.05 * changed.sum()


def test_a_face_cut_off_by_the_edge_pastes_without_error(photo: np.ndarray, dlib_landmarks5: LandmarkFinder) -> None:
    landmarks = dlib_landmarks5(photo)[0]
    shifted = landmarks - landmarks.min(axis=0) + 5  # face in the top-left corner
    crop, affine = align_face(photo, shifted)
    pasted = paste_faces(photo, [np.full_like(crop, 255)], [affine])
    assert pasted.shape == photo.shape
    assert (pasted != photo).any()


def test_mismatched_crops_and_affines_are_refused(faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    crop, affine = faces[0]
    with pytest.raises(ValueError, match="affines"):
        paste_faces(crop, [crop, crop], [affine])
