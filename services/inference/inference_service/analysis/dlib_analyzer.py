"""Face analysis with dlib: the HOG frontal detector (fast on a CPU), the 68-point shape
predictor, and the ResNet face recognition model (128-d descriptors).

The model files come from the face_recognition_models wheel, which is located but never
imported (its __init__ needs pkg_resources)."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np

from inference_service.analysis.base import (
    Box,
    Detection,
    FaceAnalyzer,
    ModelFileMissing,
    l2_normalised,
    require_files,
)

SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MODEL_FILES = (SHAPE_PREDICTOR_FILE, RECOGNITION_MODEL_FILE)

# Indices into dlib's 68-point layout; "left" as seen in the image.
_LEFT_EYE = slice(36, 42)
_RIGHT_EYE = slice(42, 48)
_NOSE_TIP = 30
_LEFT_MOUTH = 48
_RIGHT_MOUTH = 54


def default_model_dir() -> Path | None:
    """The models folder of the installed face_recognition_models package, found without
    importing it; None when the package is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "models"


def ffhq_points(shape: Any) -> np.ndarray:
    """The five FFHQ landmarks from a 68-point dlib.full_object_detection, (5, 2) float32."""
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    return np.stack(
        [
            points[_LEFT_EYE].mean(axis=0),
            points[_RIGHT_EYE].mean(axis=0),
            points[_NOSE_TIP],
            points[_LEFT_MOUTH],
            points[_RIGHT_MOUTH],
        ]
    ).astype(np.float32)


class DlibFaceAnalyzer(FaceAnalyzer):
    model_id = "dlib-resnet-v1"

    def __init__(self, model_dir: Path | None = None, upsample: int = 1) -> None:
        """upsample: how many times the detector doubles the image first; 1 finds faces down
        to about 40 px wide, each step costs about 4x the time."""
        super().__init__()
        if upsample < 0:
            raise ValueError("upsample must be 0 or more")
        self.model_dir = model_dir
        self.upsample = upsample
        # dlib's objects are shared by every caller; one call at a time.
        self._dlib_lock = threading.Lock()
        self._detector: Any = None
        self._shape_predictor: Any = None
        self._recogniser: Any = None

    def _load(self) -> None:
        model_dir = self.model_dir or default_model_dir()
        if model_dir is None:
            raise ModelFileMissing(
                (Path(name) for name in MODEL_FILES), hint="face_recognition_models is not installed; pass model_dir"
            )
        paths = require_files(model_dir, MODEL_FILES)
        self._detector = dlib.get_frontal_face_detector()
        self._shape_predictor = dlib.shape_predictor(str(paths[SHAPE_PREDICTOR_FILE]))
        self._recogniser = dlib.face_recognition_model_v1(str(paths[RECOGNITION_MODEL_FILE]))

    def _analyze(self, image_bgr: np.ndarray) -> list[Detection]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        faces = []
        with self._dlib_lock:
            rects, scores, _ = self._detector.run(rgb, self.upsample, 0.0)
            for rect, score in zip(rects, scores, strict=True):
                shape = self._shape_predictor(rgb, rect)
                faces.append(
                    Detection(
                        box=(int(rect.left()), int(rect.top()), int(rect.right()), int(rect.bottom())),
                        score=float(score),
                        landmarks=ffhq_points(shape),
                        embedding=self._descriptor(rgb, shape),
                    )
                )
        return faces

    def _embed_at(self, image_bgr: np.ndarray, landmarks: np.ndarray, box: Box) -> np.ndarray:
        # dlib's recogniser aligns on its own 68 points, not on the five FFHQ ones, so the shape
        # predictor is run again in the box; on the image analyze() saw this gives the same
        # points, and on a restored copy it follows the restored features.
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        with self._dlib_lock:
            shape = self._shape_predictor(rgb, dlib.rectangle(*(int(v) for v in box)))
            return self._descriptor(rgb, shape)

    def _descriptor(self, rgb: np.ndarray, shape: Any) -> np.ndarray:
        return l2_normalised(np.asarray(self._recogniser.compute_face_descriptor(rgb, shape)))
