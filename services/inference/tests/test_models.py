"""Which restorers and face analyser the worker runs: auto serves what the model directory
holds (and classical always) and says why; an explicit choice that cannot load stops start-up,
naming the file. And what the worker offers in the model registry for each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facerestore_common.model_registry import ModelOffer
from inference_service.analysis.base import ModelFileMissing
from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.models import (
    UNOFFICIAL_VERSION,
    ServedModel,
    choose_analyzer,
    choose_restorers,
    offer_of,
    release_version,
)
from inference_service.restoration.base import WeightsMissing
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.codeformer import CodeFormerRestorer
from inference_service.restoration.gfpgan import GfpganRestorer
from inference_service.settings import Settings


def test_auto_without_weights_serves_classical_only_and_says_why(tmp_path: Path) -> None:
    served = choose_restorers(Settings(model_dir=str(tmp_path)))
    assert list(served) == ["classical"]
    assert isinstance(served["classical"].restorer, ClassicalRestorer)
    assert served["classical"].reason == "auto: weight-free, runs everywhere"


def test_auto_with_weights_in_the_released_layout_serves_gfpgan_first_and_classical(
    tmp_path: Path, gfpgan_checkpoint: Path
) -> None:
    shutil.copy(gfpgan_checkpoint, tmp_path / "GFPGANv1.4.pth")

    served = choose_restorers(Settings(model_dir=str(tmp_path), device="cpu"))

    assert list(served) == ["gfpgan", "classical"]  # the first is the worker's default family
    gfpgan = served["gfpgan"]
    assert isinstance(gfpgan.restorer, GfpganRestorer) and gfpgan.restorer.loaded
    assert gfpgan.restorer.model_id.startswith("gfpgan-") and str(tmp_path / "GFPGANv1.4.pth") in gfpgan.reason


def test_explicit_gfpgan_without_weights_fails_at_start_up_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing) as missing:
        choose_restorers(Settings(model_dir=str(tmp_path), restorers="classical,gfpgan"))
    assert str(tmp_path / "GFPGANv1.4.pth") in str(missing.value)


def test_restorers_names_known_families_only_and_are_kept_in_preference_order() -> None:
    assert Settings(restorers=" classical , gfpgan").restorer_families == ("gfpgan", "classical")
    assert Settings(restorers="auto").restorer_families is None
    for wrong in ("restoreformer", "auto,gfpgan", " , "):
        with pytest.raises(ValueError, match="RESTORERS"):
            Settings(restorers=wrong)


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


def test_auto_with_only_codeformer_weights_serves_codeformer_at_the_configured_fidelity(
    tmp_path: Path, codeformer_checkpoint: Path
) -> None:
    (tmp_path / "codeformer.pth").symlink_to(codeformer_checkpoint)

    served = choose_restorers(Settings(model_dir=str(tmp_path), device="cpu", codeformer_fidelity=0.8))

    assert list(served) == ["codeformer", "classical"]
    restorer = served["codeformer"].restorer
    assert isinstance(restorer, CodeFormerRestorer)
    assert restorer.loaded and restorer.model_id.startswith("codeformer-")
    assert restorer.default_fidelity == 0.8
    assert str(tmp_path / "codeformer.pth") in served["codeformer"].reason


def test_auto_serves_every_family_whose_weights_are_there_gfpgan_first(
    tmp_path: Path, gfpgan_checkpoint: Path, codeformer_checkpoint: Path
) -> None:
    (tmp_path / "GFPGANv1.4.pth").symlink_to(gfpgan_checkpoint)
    (tmp_path / "codeformer.pth").symlink_to(codeformer_checkpoint)

    served = choose_restorers(Settings(model_dir=str(tmp_path), device="cpu"))

    assert list(served) == ["gfpgan", "codeformer", "classical"]


def test_an_explicit_list_serves_exactly_those_families(tmp_path: Path, codeformer_checkpoint: Path) -> None:
    """A GPU group naming codeformer alone does not take classical work, weights for more or not."""
    (tmp_path / "codeformer.pth").symlink_to(codeformer_checkpoint)

    served = choose_restorers(Settings(model_dir=str(tmp_path), device="cpu", restorers="codeformer"))

    assert list(served) == ["codeformer"] and served["codeformer"].reason == "RESTORERS names codeformer"


def test_gfpgan_v1_3_is_chosen_by_its_file_name(tmp_path: Path, gfpgan_checkpoint: Path) -> None:
    """v1.3 and v1.4 are the same network (GFPGANer builds both as arch="clean",
    channel_multiplier=2): a v1.3-shaped checkpoint is a v1.4-shaped one under another name."""
    (tmp_path / "GFPGANv1.3.pth").symlink_to(gfpgan_checkpoint)
    settings = Settings(model_dir=str(tmp_path), device="cpu", restorers="gfpgan", gfpgan_weights="GFPGANv1.3.pth")

    restorer = choose_restorers(settings)["gfpgan"].restorer

    assert isinstance(restorer, GfpganRestorer) and restorer.loaded
    assert restorer.model_path == tmp_path / "GFPGANv1.3.pth"


def test_explicit_codeformer_without_weights_fails_at_start_up_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing) as missing:
        choose_restorers(Settings(model_dir=str(tmp_path), restorers="codeformer"))
    assert str(tmp_path / "codeformer.pth") in str(missing.value)


def test_offers_name_the_exact_weights_and_the_options_each_family_takes(
    tmp_path: Path, gfpgan_checkpoint: Path, codeformer_checkpoint: Path
) -> None:
    (tmp_path / "GFPGANv1.4.pth").symlink_to(gfpgan_checkpoint)
    (tmp_path / "codeformer.pth").symlink_to(codeformer_checkpoint)
    served = choose_restorers(Settings(model_dir=str(tmp_path), device="cpu", codeformer_fidelity=0.7))
    gfpgan, codeformer = served["gfpgan"].restorer, served["codeformer"].restorer
    assert isinstance(gfpgan, GfpganRestorer) and isinstance(codeformer, CodeFormerRestorer)
    assert gfpgan.sha256 and codeformer.sha256

    offers = {family: offer_of(model) for family, model in served.items()}

    # Test checkpoints are no upstream release: their version says so; the digest is the file's own.
    assert offers == {
        "gfpgan": ModelOffer("gfpgan", gfpgan.model_id, UNOFFICIAL_VERSION, gfpgan.sha256, False, None, 2),
        "codeformer": ModelOffer(
            "codeformer", codeformer.model_id, UNOFFICIAL_VERSION, codeformer.sha256, True, 0.7, 2
        ),
        "classical": ModelOffer("classical", "classical-opencv-v2", "2", "", False, None, 2),
    }


def test_official_weights_are_known_by_their_release_version() -> None:
    assert release_version("e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad") == "1.4"
    assert release_version("c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70") == "1.3"
    assert release_version("1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7") == "0.1.0"
    assert release_version("80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f") == UNOFFICIAL_VERSION
    assert release_version(None) == UNOFFICIAL_VERSION
    with pytest.raises(TypeError):
        offer_of(ServedModel("classical", object(), "wrong"))  # type: ignore[arg-type]


@pytest.mark.parametrize("fidelity", [-0.1, 1.1])
def test_a_codeformer_fidelity_outside_zero_to_one_is_a_settings_error(fidelity: float) -> None:
    with pytest.raises(ValueError, match="codeformer_fidelity"):
        Settings(codeformer_fidelity=fidelity)
