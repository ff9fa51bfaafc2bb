"""Which restorer and face analyser the worker runs: auto picks what the model directory
holds and says why; an explicit choice that cannot load stops start-up, naming the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inference_service.analysis.base import ModelFileMissing
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.models import choose_analyzer, choose_restorer
from inference_service.restoration.base import WeightsMissing
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.codeformer import CodeFormerRestorer
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


def test_device_cuda_without_cuda_refuses_to_start_naming_device(tmp_path: Path, gfpgan_checkpoint: Path) -> None:
    """The real worker process, with its GPUs hidden from it (as in a pod without nvidia.com/gpu):
    it stops at start-up with a message naming DEVICE, weights present or not, before any work."""
    shutil.copy(gfpgan_checkpoint, tmp_path / "GFPGANv1.4.pth")
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "DEVICE": "cuda",
        "MODEL_DIR": str(tmp_path),
        "METRICS_PORT": "0",
        # Nothing listens here: the refusal must come before any connection is tried.
        "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "MONGO_URL": "mongodb://127.0.0.1:1",
        "S3_ENDPOINT": "127.0.0.1:1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "inference_service.main"], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert "DeviceUnavailable: DEVICE=cuda but torch finds no usable CUDA device" in result.stderr, result.stderr


def test_auto_with_only_codeformer_weights_picks_codeformer_at_the_configured_fidelity(
    tmp_path: Path, codeformer_checkpoint: Path
) -> None:
    (tmp_path / "codeformer.pth").symlink_to(codeformer_checkpoint)

    restorer, choice = choose_restorer(Settings(model_dir=str(tmp_path), device="cpu", codeformer_fidelity=0.8))

    assert isinstance(restorer, CodeFormerRestorer) and choice.name == "codeformer"
    assert restorer.loaded and restorer.model_id.startswith("codeformer-")
    assert restorer.default_fidelity == 0.8
    assert str(tmp_path / "codeformer.pth") in choice.reason


def test_auto_prefers_gfpgan_when_both_weights_are_there(
    tmp_path: Path, gfpgan_checkpoint: Path, codeformer_checkpoint: Path
) -> None:
    (tmp_path / "GFPGANv1.4.pth").symlink_to(gfpgan_checkpoint)
    (tmp_path / "codeformer.pth").symlink_to(codeformer_checkpoint)

    restorer, choice = choose_restorer(Settings(model_dir=str(tmp_path), device="cpu"))

    assert isinstance(restorer, GfpganRestorer) and choice.name == "gfpgan"


def test_gfpgan_v1_3_is_chosen_by_its_file_name(tmp_path: Path, gfpgan_checkpoint: Path) -> None:
    """v1.3 and v1.4 are the same network (GFPGANer builds both as arch="clean",
    channel_multiplier=2): a v1.3-shaped checkpoint is a v1.4-shaped one under another name."""
    (tmp_path / "GFPGANv1.3.pth").symlink_to(gfpgan_checkpoint)
    settings = Settings(model_dir=str(tmp_path), device="cpu", restorer="gfpgan", gfpgan_weights="GFPGANv1.3.pth")

    restorer, choice = choose_restorer(settings)

    assert isinstance(restorer, GfpganRestorer) and restorer.loaded
    assert restorer.model_path == tmp_path / "GFPGANv1.3.pth" and choice.reason == "RESTORER=gfpgan"


def test_explicit_codeformer_without_weights_fails_at_start_up_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing) as missing:
        choose_restorer(Settings(model_dir=str(tmp_path), restorer="codeformer"))
    assert str(tmp_path / "codeformer.pth") in str(missing.value)


@pytest.mark.parametrize("fidelity", [-0.1, 1.1])
def test_a_codeformer_fidelity_outside_zero_to_one_is_a_settings_error(fidelity: float) -> None:
    with pytest.raises(ValueError, match="codeformer_fidelity"):
        Settings(codeformer_fidelity=fidelity)
