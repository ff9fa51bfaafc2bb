"""GFPGAN v1.x ("clean" architecture: the released GFPGANv1.3.pth and GFPGANv1.4.pth) as a
Restorer.

The network is loaded with spandrel, chaiNNer's maintained model loader, which carries the
same GFPGANv1Clean code as the gfpgan package. The gfpgan package itself is not used: importing
it pulls in basicsr's whole training and data stack (lmdb, tb-nightly, and
torchvision.transforms.functional_tensor, which current torchvision no longer has).

v1.3 and v1.4 are the same network with different training (GFPGANer builds both as
arch="clean", channel_multiplier=2), so one loader serves both: GFPGAN_WEIGHTS names the file.
GFPGAN has no fidelity dial; a fidelity asked for is checked and otherwise ignored.

The decoder uses the noise maps stored in the checkpoint instead of fresh random noise, so the
same face always restores to the same pixels."""

from __future__ import annotations

from typing import Any

import torch

from inference_service.restoration.face_network import (
    FACE_SIZE,
    HALF_CHOICES,
    FaceNetworkRestorer,
    faces_to_tensor,
    file_sha256,
    resolve_device,
    tensor_to_faces,
)

__all__ = [
    "ARCHITECTURE_ID",
    "FACE_SIZE",
    "HALF_CHOICES",
    "RELEASED_ARCHITECTURE",
    "GfpganRestorer",
    "faces_to_tensor",
    "file_sha256",
    "resolve_device",
    "tensor_to_faces",
]

ARCHITECTURE_ID = "GFPGAN"
# GFPGANv1Clean's hyper-parameters in the released v1.3 and v1.4 checkpoints (as GFPGANer
# builds the network). spandrel reads them off the state dict; tests and benchmarks use
# them to build a network of the released shape.
RELEASED_ARCHITECTURE: dict[str, Any] = {
    "out_size": FACE_SIZE,
    "num_style_feat": 512,
    "channel_multiplier": 2,
    "decoder_load_path": None,
    "fix_decoder": False,
    "num_mlp": 8,
    "input_is_latent": True,
    "different_w": True,
    "narrow": 1,
    "sft_half": True,
}


class GfpganRestorer(FaceNetworkRestorer):
    name = "gfpgan"
    architecture_id = ARCHITECTURE_ID
    weights_hint = "GFPGAN v1.x clean weights, e.g. GFPGANv1.4.pth or GFPGANv1.3.pth"

    def _forward(self, inputs: torch.Tensor, fidelity: float | None) -> torch.Tensor:
        output: torch.Tensor = self._model(inputs, return_rgb=False, randomize_noise=False)[0]
        return output
