"""Which restorer and face analyser the worker runs: auto picks what the model directory
holds and says why; an explicit choice that cannot load stops start-up, naming the file."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from inference_service.analysis.base import ModelFileMissing
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.models import choose_analyzer, choose_restorer
from inference_service.restoration.base import WeightsMissing
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.gfpgan import GfpganRestorer
from inference_service.settings import Settings


def test_auto_without_weights_restores_classically_and_says_why(tmp_path: Path) -> None:
    restorer, choice = choose_restorer(Settings(model_dir=str(tmp_path)))
    assert isinstance(restorer, ClassicalRestorer)
    assert choice.name == "classical" and str(tmp_path / "GFPGANv1.4.pth") in choice.reason


def test_auto_with_weights_in_the_released_layout_picks_gfpgan(tmp_path: Path, gfpgan_checkpoint: Path) -> None:
    shutil.copy(gfpgan_checkpoint, tmp_path / "GFPGANv1.4.pth")

    restorer, choice = choose_restorer(Settings(model_dir=str(tmp_path), device="cpu"))

    assert isinstance(restorer, GfpganRestorer) and choice.name == "gfpgan"
    assert restorer.model_id.startswith("gfpgan-") and "found" in choice.reason


def test_explicit_gfpgan_without_weights_fails_at_start_up_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing) as missing:
        choose_restorer(Settings(model_dir=str(tmp_path), restorer="gfpgan"))
    assert str(tmp_path / "GFPGANv1.4.pth") in str(missing.value)


def test_auto_without_the_insightface_pack_analyses_with_dlib(tmp_path: Path) -> None:
    analyzer, choice = choose_analyzer(Settings(model_dir=str(tmp_path)))
    assert isinstance(analyzer, DlibFaceAnalyzer) and analyzer.loaded
    assert choice.name == "dlib" and "buffalo_l" in choice.reason


def test_explicit_insightface_without_its_pack_fails_naming_the_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileMissing) as missing:
        choose_analyzer(Settings(model_dir=str(tmp_path), face_analyzer="insightface"))
    message = str(missing.value)
    assert "det_10g.onnx" in message and "w600k_r50.onnx" in message


def test_insightface_pack_without_its_runtime_names_the_missing_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    for name in ("det_10g.onnx", "w600k_r50.onnx"):
        (pack / name).write_bytes(b"not a real model")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as on a machine without it
    with pytest.raises(RuntimeError, match="onnxruntime"):
        choose_analyzer(Settings(model_dir=str(tmp_path), face_analyzer="insightface"))
