"""Which restorers and face analyser this worker runs, chosen from settings, and what it
offers in the model registry.

`auto` takes every model backend whose files are present plus the weight-free one, and says
which and why; an explicit choice that cannot load is an error at start-up that names the
missing file or package."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch

from facerestore_common.model_registry import AUTO_ORDER, ModelOffer
from inference_service.analysis.base import FaceAnalyzer
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.analysis.insightface_analyzer import InsightFaceAnalyzer
from inference_service.download_models import OFFICIAL
from inference_service.restoration.base import Restorer
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.codeformer import CodeFormerRestorer
from inference_service.restoration.face_network import FaceNetworkRestorer
from inference_service.restoration.gfpgan import GfpganRestorer
from inference_service.settings import Settings

# The upstream release each official weights file belongs to, by its name in download_models.OFFICIAL.
RELEASE_VERSIONS = {"GFPGANv1.4.pth": "1.4", "GFPGANv1.3.pth": "1.3", "codeformer.pth": "0.1.0"}
UNOFFICIAL_VERSION = "unofficial"
MAX_UPSCALE = 2


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


@dataclass(frozen=True)
class ServedModel:
    """A restorer family this worker serves, with the loaded restorer and why it serves it."""

    family: str
    restorer: Restorer
    reason: str


def choose_restorers(settings: Settings) -> dict[str, ServedModel]:
    """Family -> the restorer serving it, loaded, in AUTO_ORDER (the worker's default family
    first). A family named in RESTORERS whose weights are missing or wrong raises here."""
    require_device(settings)
    candidates: dict[str, tuple[Restorer, str]] = {}
    named = settings.restorer_families
    gfpgan, codeformer = gfpgan_restorer(settings), codeformer_restorer(settings)
    if named is None:
        for family, network in (("gfpgan", gfpgan), ("codeformer", codeformer)):
            if network.model_path.exists():
                candidates[family] = (network, f"auto: weights found at {network.model_path}")
        candidates["classical"] = (ClassicalRestorer(), "auto: weight-free, runs everywhere")
    else:
        networks: dict[str, Restorer] = {"gfpgan": gfpgan, "codeformer": codeformer, "classical": ClassicalRestorer()}
        for family in named:
            candidates[family] = (networks[family], f"RESTORERS names {family}")
    served: dict[str, ServedModel] = {}
    for family in AUTO_ORDER:
        if family in candidates:
            restorer, reason = candidates[family]
            if isinstance(restorer, FaceNetworkRestorer):
                restorer.load()  # missing or wrong weights stop the service here, naming the file
            served[family] = ServedModel(family, restorer, reason)
    return served


def release_version(sha256: str | None) -> str:
    for item in OFFICIAL:
        if sha256 and item.sha256 == sha256 and item.name in RELEASE_VERSIONS:
            return RELEASE_VERSIONS[item.name]
    return UNOFFICIAL_VERSION


def offer_of(served: ServedModel) -> ModelOffer:
    """What the model registry says about a served family: the exact weights and the options it takes."""
    restorer = served.restorer
    if isinstance(restorer, CodeFormerRestorer):
        return ModelOffer(
            served.family,
            restorer.model_id,
            release_version(restorer.sha256),
            restorer.sha256 or "",
            True,
            restorer.default_fidelity,
            MAX_UPSCALE,
        )
    if isinstance(restorer, FaceNetworkRestorer):
        sha256 = restorer.sha256 or ""
        return ModelOffer(served.family, restorer.model_id, release_version(sha256), sha256, False, None, MAX_UPSCALE)
    if isinstance(restorer, ClassicalRestorer):
        return ModelOffer(served.family, restorer.model_id, restorer.version, "", False, None, MAX_UPSCALE)
    raise TypeError(f"no offer for a {type(restorer).__name__}")


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
