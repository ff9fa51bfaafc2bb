"""Throughput of the restoration pipeline per backend on this machine.

    .venv/bin/python benchmarks/inference.py [--runs N] [--device cpu|cuda] [--weights PATH]

For each backend (classical, and gfpgan) it runs the full pipeline (decode, detect and
embed with dlib, align, restore, paste, measure, encode) on real face photos shipped in
the insightface wheel and prints images per second and milliseconds per stage. Without
--weights the gfpgan run uses a randomly initialised GFPGANv1Clean saved in the released
file's layout: the cost of a forward pass does not depend on the weights' values."""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.pipeline import RestorationPipeline
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.gfpgan import RELEASED_ARCHITECTURE, GfpganRestorer

PHOTOS = ("t1.jpg", "Tom_Hanks_54745.png")


def photo_dir() -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        raise SystemExit("the insightface wheel (test data) is not installed: make setup")
    return Path(spec.origin).parent / "data" / "images"


def random_gfpgan_weights(directory: Path) -> Path:
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    network = GFPGAN(**RELEASED_ARCHITECTURE)
    path = directory / "GFPGANv1.4.pth"
    torch.save({"params_ema": network.state_dict()}, path)
    return path


def measure(pipeline: RestorationPipeline, content: bytes, runs: int) -> tuple[float, dict[str, float], int]:
    pipeline.run(content)  # warm-up: first-use loading and allocation
    seconds, stages = [], {}
    faces = 0
    for _ in range(runs):
        started = time.perf_counter()
        result = pipeline.run(content)
        seconds.append(time.perf_counter() - started)
        faces = len(result.faces)
        for name, ms in result.stage_ms.items():
            stages.setdefault(name, []).append(ms)
    return statistics.median(seconds), {name: statistics.median(values) for name, values in stages.items()}, faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", type=Path, default=None, help="a real GFPGANv1.4.pth; default: random weights")
    args = parser.parse_args()

    analyzer = DlibFaceAnalyzer()
    analyzer.load()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device} ({torch.get_num_threads()} CPU threads); runs per image: {args.runs} (median)")
    with tempfile.TemporaryDirectory() as scratch:
        weights = args.weights or random_gfpgan_weights(Path(scratch))
        gfpgan = GfpganRestorer(weights, device=device)
        gfpgan.load()
        backends = {"classical": ClassicalRestorer(), "gfpgan": gfpgan}
        for name, restorer in backends.items():
            pipeline = RestorationPipeline(restorer, analyzer, ClassicalRestorer(), 256, 92)
            for photo in PHOTOS:
                content = (photo_dir() / photo).read_bytes()
                seconds, stages, faces = measure(pipeline, content, args.runs)
                stage_text = ", ".join(f"{stage} {ms:.0f}" for stage, ms in stages.items())
                print(
                    f"{name:9s} {photo:20s} faces {faces}  {1 / seconds:6.2f} images/s"
                    f"  ({seconds * 1000:.0f} ms: {stage_text})"
                )


if __name__ == "__main__":
    main()
