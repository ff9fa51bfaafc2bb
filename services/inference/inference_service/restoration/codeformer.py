"""CodeFormer (Zhou et al., NeurIPS 2022) as a Restorer, with its fidelity weight w.

CodeFormer predicts each face's code sequence in a learned codebook of high-quality faces with
a transformer and decodes it; controllable feature transformation blocks then fuse the input's
encoder features back in, scaled by w. w = 0 is the codebook's face alone (strongest
restoration), w = 1 keeps most of the input's own features (closest to the person as
photographed). w is a per-call argument: a call without one runs at the restorer's default.

The network is loaded through spandrel's loader from the released file's layout
(`{"params_ema": state_dict}`, codeformer.pth of the v0.1.0 release). spandrel itself does not
carry CodeFormer: it is in spandrel_extra_arches (chaiNNer's package for architectures under
restrictive licences), added here to a private copy of spandrel's registry, never to the global
one. CodeFormer's code and weights are under the NTU S-Lab License 1.0 (non-commercial use)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from inference_service.restoration.base import check_fidelity
from inference_service.restoration.face_network import FaceNetworkRestorer

if TYPE_CHECKING:
    from spandrel import ArchRegistry

ARCHITECTURE_ID = "CodeFormer"
DEFAULT_FIDELITY = 0.5
# The released network's hyper-parameters, as CodeFormer's inference_codeformer.py builds it.
# spandrel reads them off the state dict; tests and benchmarks use them to build a network of
# the released shape.
RELEASED_ARCHITECTURE: dict[str, Any] = {
    "dim_embd": 512,
    "n_head": 8,
    "n_layers": 9,
    "codebook_size": 1024,
    "latent_size": 256,
    "connect_list": ["32", "64", "128", "256"],
    "fix_modules": ["quantize", "generator"],
}


def codeformer_class() -> type[torch.nn.Module]:
    """spandrel_extra_arches' CodeFormer network class."""
    with warnings.catch_warnings():
        # Its swish is decorated with torch.jit.script, which current torch deprecates.
        warnings.simplefilter("ignore", FutureWarning)
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer
    network: type[torch.nn.Module] = CodeFormer
    return network


@functools.cache
def registry() -> ArchRegistry:
    """spandrel's architectures plus CodeFormer, so that a checkpoint of another architecture
    is named in the refusal."""
    from spandrel import MAIN_REGISTRY

    codeformer_class()  # imports the package with its warning silenced
    from spandrel_extra_arches import EXTRA_REGISTRY

    combined = MAIN_REGISTRY.copy()
    combined.add(EXTRA_REGISTRY[ARCHITECTURE_ID], ignore_duplicates=True)
    return combined


class CodeFormerRestorer(FaceNetworkRestorer):
    name = "codeformer"
    architecture_id = ARCHITECTURE_ID
    weights_hint = "CodeFormer weights, codeformer.pth of the v0.1.0 release"

    def __init__(
        self,
        model_path: Path,
        sha256: str | None = None,
        device: str = "auto",
        half: str = "auto",
        batch_size: int = 4,
        fidelity: float = DEFAULT_FIDELITY,
    ) -> None:
        """fidelity: the w used when a call does not give one, in [0, 1]."""
        super().__init__(model_path, sha256=sha256, device=device, half=half, batch_size=batch_size)
        self.default_fidelity = check_fidelity(fidelity)

    def _registry(self) -> ArchRegistry:
        return registry()

    def _fidelity(self, fidelity: float | None) -> float:
        return self.default_fidelity if fidelity is None else check_fidelity(fidelity)

    def _forward(self, inputs: torch.Tensor, fidelity: float | None) -> torch.Tensor:
        weight = self.default_fidelity if fidelity is None else fidelity
        output: torch.Tensor = self._model(inputs, weight=weight)[0]
        return output
