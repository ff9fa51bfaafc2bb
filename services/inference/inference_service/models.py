"""Which restorer and face analyser this worker runs, chosen from settings.

`auto` takes the model backend when its files are present and the weight-free one when
they are not, and says which and why; an explicit choice that cannot load is an error at
start-up that names the missing file or package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference_service.analysis.base import FaceAnalyzer
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.analysis.insightface_analyzer import InsightFaceAnalyzer
from inference_service.restoration.base import Restorer
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.gfpgan import GfpganRestorer
from inference_service.settings import Settings


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose_restorer(settings: Settings) -> tuple[Restorer, Choice]:
    weights = Path(settings.model_dir) / settings.gfpgan_weights
    if settings.restorer == "classical":
        return ClassicalRestorer(), Choice("classical", "RESTORER=classical")
    if settings.restorer == "auto" and not weights.exists():
        return ClassicalRestorer(), Choice("classical", f"auto: no GFPGAN weights at {weights}")
    restorer = GfpganRestorer(
        weights,
        sha256=settings.gfpgan_sha256 or None,
        device=settings.device,
        half=settings.gfpgan_half,
        batch_size=settings.restore_batch_size,
    )
    restorer.load()  # an explicit gfpgan without its weights stops the service here
    reason = "RESTORER=gfpgan" if settings.restorer == "gfpgan" else f"auto: GFPGAN weights found at {weights}"
    return restorer, Choice("gfpgan", reason)


def choose_analyzer(settings: Settings) -> tuple[FaceAnalyzer, Choice]:
    pack = InsightFaceAnalyzer.pack_dir(Path(settings.model_dir))
    analyzer: FaceAnalyzer
    if settings.face_analyzer == "dlib" or (
        settings.face_analyzer == "auto" and InsightFaceAnalyzer.missing_files(pack)
    ):
        analyzer = DlibFaceAnalyzer()
        reason = "FACE_ANALYZER=dlib" if settings.face_analyzer == "dlib" else f"auto: no buffalo_l pack at {pack}"
        choice = Choice("dlib", reason)
    else:
        analyzer = InsightFaceAnalyzer(Path(settings.model_dir), device=settings.device)
        reason = "FACE_ANALYZER=insightface" if settings.face_analyzer == "insightface" else f"auto: {pack}"
        choice = Choice("insightface", reason)
    analyzer.load()
    return analyzer, choice
