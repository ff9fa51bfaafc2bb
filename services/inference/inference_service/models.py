"""Which restorer and face analyser this worker runs, chosen from settings.

`auto` takes the model backend when its files are present and the weight-free one when
they are not, and says which and why; an explicit choice that cannot load is an error at
start-up that names the missing file or package."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch

from inference_service.analysis.base import FaceAnalyzer
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.analysis.insightface_analyzer import InsightFaceAnalyzer
from inference_service.restoration.base import Restorer
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.codeformer import CodeFormerRestorer
from inference_service.restoration.gfpgan import GfpganRestorer
from inference_service.settings import Settings


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


class DeviceUnavailable(RuntimeError):
    """DEVICE=cuda where CUDA cannot be used: the worker refuses to start rather than run on the CPU."""


def require_device(settings: Settings) -> None:
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "DEVICE=cuda but torch finds no usable CUDA device here (no GPU in this pod, no driver, or a CPU-only "
            "torch build); the worker does not fall back to the CPU. Give the pod a GPU (nvidia.com/gpu) and the "
            "GPU image, or set DEVICE=cpu (or auto) to run on the CPU on purpose."
        )


def _require_onnxruntime_cuda() -> None:
    try:
        providers = importlib.import_module("onnxruntime").get_available_providers()
    except ImportError:
        return  # the analyser's own load() names the missing package
    if "CUDAExecutionProvider" not in providers:
        raise DeviceUnavailable(
            "DEVICE=cuda but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu, as the GPU image "
            "does), so insightface would run on the CPU; set DEVICE=cpu (or auto) to allow that."
        )


def gfpgan_restorer(settings: Settings) -> GfpganRestorer:
    return GfpganRestorer(
        Path(settings.model_dir) / settings.gfpgan_weights,
        sha256=settings.gfpgan_sha256 or None,
        device=settings.device,
        half=settings.gfpgan_half,
        batch_size=settings.restore_batch_size,
    )


def codeformer_restorer(settings: Settings) -> CodeFormerRestorer:
    return CodeFormerRestorer(
        Path(settings.model_dir) / settings.codeformer_weights,
        sha256=settings.codeformer_sha256 or None,
        device=settings.device,
        batch_size=settings.restore_batch_size,
        fidelity=settings.codeformer_fidelity,
    )


def choose_restorer(settings: Settings) -> tuple[Restorer, Choice]:
    require_device(settings)
    if settings.restorer == "classical":
        return ClassicalRestorer(), Choice("classical", "RESTORER=classical")
    restorer: GfpganRestorer | CodeFormerRestorer
    if settings.restorer == "gfpgan":
        restorer, reason = gfpgan_restorer(settings), "RESTORER=gfpgan"
    elif settings.restorer == "codeformer":
        restorer, reason = codeformer_restorer(settings), "RESTORER=codeformer"
    else:
        gfpgan, codeformer = gfpgan_restorer(settings), codeformer_restorer(settings)
        if gfpgan.model_path.exists():
            restorer, reason = gfpgan, f"auto: GFPGAN weights found at {gfpgan.model_path}"
        elif codeformer.model_path.exists():
            restorer, reason = codeformer, f"auto: CodeFormer weights found at {codeformer.model_path}"
        else:
            reason = f"auto: no GFPGAN weights at {gfpgan.model_path} nor CodeFormer weights at {codeformer.model_path}"
            return ClassicalRestorer(), Choice("classical", reason)
    restorer.load()  # an explicit choice without its weights stops the service here
    return restorer, Choice(restorer.name, reason)


def choose_analyzer(settings: Settings) -> tuple[FaceAnalyzer, Choice]:
    require_device(settings)
    pack = InsightFaceAnalyzer.pack_dir(Path(settings.model_dir))
    analyzer: FaceAnalyzer
    if settings.face_analyzer == "dlib" or (
        settings.face_analyzer == "auto" and InsightFaceAnalyzer.missing_files(pack)
    ):
        analyzer = DlibFaceAnalyzer()
        reason = "FACE_ANALYZER=dlib" if settings.face_analyzer == "dlib" else f"auto: no buffalo_l pack at {pack}"
        choice = Choice("dlib", reason)
    else:
        if settings.device == "cuda":
            _require_onnxruntime_cuda()
        analyzer = InsightFaceAnalyzer(Path(settings.model_dir), device=settings.device)
        reason = "FACE_ANALYZER=insightface" if settings.face_analyzer == "insightface" else f"auto: {pack}"
        choice = Choice("insightface", reason)
    analyzer.load()
    return analyzer, choice
