"""Fixtures shared by the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from spandrel.architectures.GFPGAN import GFPGAN


@pytest.fixture(scope="session")
def gfpgan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised GFPGANv1Clean with GFPGANv1.4's hyper-parameters, saved in
    the released file's layout ({"params_ema": state_dict}) under the released name."""
    torch.manual_seed(0)
    network = GFPGAN(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )
    path = tmp_path_factory.mktemp("weights") / "GFPGANv1.4.pth"
    torch.save({"params_ema": network.state_dict()}, path)
    return path
