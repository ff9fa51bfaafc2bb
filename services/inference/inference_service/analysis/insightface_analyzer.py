"""InsightFace's buffalo_l pack (RetinaFace detector with five landmarks, ArcFace
w600k_r50 embedding), as Immich runs it: the production analyser.

The pack must already be in MODEL_DIR/models/buffalo_l: FaceAnalysis would download a
missing pack by name, so the files are checked before it is ever constructed (a missing
one is an error naming it) and FaceAnalysis is given the pack's directory, never a name."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from inference_service.analysis.base import Box, Detection, FaceAnalyzer, ModelFileMissing, l2_normalised

PACK = "buffalo_l"
REQUIRED_FILES = ("det_10g.onnx", "w600k_r50.onnx")


class InsightFaceAnalyzer(FaceAnalyzer):
    model_id = "insightface-buffalo_l-w600k_r50"

    def __init__(self, model_dir: Path, device: str = "auto", det_size: int = 640) -> None:
        super().__init__()
        self._model_dir = model_dir
        self._device = device
        self._det_size = det_size
        self._app: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def pack_dir(model_dir: Path) -> Path:
        # Where FaceAnalysis(name, root) would look, and where the released pack unpacks.
        return model_dir / "models" / PACK

    @staticmethod
    def missing_files(pack: Path) -> list[Path]:
        return [pack / name for name in REQUIRED_FILES if not (pack / name).is_file()]

    def _load(self) -> None:
        pack = self.pack_dir(self._model_dir).resolve()
        missing = self.missing_files(pack)
        if missing:
            raise ModelFileMissing(missing, hint="put the insightface buffalo_l pack in MODEL_DIR/models/buffalo_l")
        try:
            import onnxruntime
            from insightface.app import FaceAnalysis
        except ImportError as error:
            raise RuntimeError(
                f"FACE_ANALYZER=insightface needs the insightface and onnxruntime packages: {error}"
            ) from error
        use_gpu = self._device != "cpu" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if use_gpu:
            # onnxruntime-gpu finds the CUDA and cuDNN libraries of the nvidia-* wheels only once they
            # are loaded (by torch, or by this); without it the CUDA provider silently falls back to CPU.
            onnxruntime.preload_dlls()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_gpu else ["CPUExecutionProvider"]
        app = FaceAnalysis(
            name=str(pack), root=str(self._model_dir), providers=providers, allowed_modules=["detection", "recognition"]
        )
        app.prepare(ctx_id=0 if use_gpu else -1, det_size=(self._det_size, self._det_size))
        self._app = app

    def _analyze(self, image_bgr: np.ndarray) -> list[Detection]:
        with self._lock:
            found = self._app.get(image_bgr)
        return [
            Detection(
                box=(int(face.bbox[0]), int(face.bbox[1]), int(face.bbox[2]), int(face.bbox[3])),
                score=float(face.det_score),
                # RetinaFace's five points come in the FFHQ order already.
                landmarks=np.asarray(face.kps, dtype=np.float32),
                embedding=l2_normalised(np.asarray(face.embedding, dtype=np.float32)),
            )
            for face in found
        ]

    def _embed_at(self, image_bgr: np.ndarray, landmarks: np.ndarray, box: Box) -> np.ndarray:
        from insightface.app.common import Face

        face = Face(bbox=np.asarray(box, dtype=np.float32), kps=landmarks.astype(np.float32), det_score=1.0)
        with self._lock:
            self._app.models["recognition"].get(image_bgr, face)
        return l2_normalised(np.asarray(face.embedding, dtype=np.float32))
