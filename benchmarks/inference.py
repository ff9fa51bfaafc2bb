"""Throughput of the restoration pipeline per backend on this machine, and the cost of one face.

    .venv/bin/python benchmarks/inference.py [--runs N] [--device cpu|cuda] [--backends classical,gfpgan,codeformer]
        [--batches 1,4,8] [--weights GFPGANv1.4.pth] [--codeformer-weights codeformer.pth]

1. For each backend it runs the full pipeline (decode, detect and embed with dlib, align,
   restore, paste, measure, encode) on real face photos shipped in the insightface wheel and
   prints images per second and milliseconds per stage.
2. Per face: the classical restorer on aligned crops (with and without its deconvolution), and
   CodeFormer's forward pass at each batch size (--batches), as milliseconds per face.

Without --weights / --codeformer-weights the networks are randomly initialised and saved in the
released files' layouts, then loaded through the production loaders: the cost of a forward
pass does not depend on the weights' values."""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from inference_service.analysis.dlib_analyzer import DlibFaceAnalyzer
from inference_service.faces.align import align_face
from inference_service.pipeline import RestorationPipeline
from inference_service.restoration import codeformer
from inference_service.restoration.base import Restorer
from inference_service.restoration.classical import ClassicalRestorer
from inference_service.restoration.codeformer import CodeFormerRestorer
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


def random_codeformer_weights(directory: Path) -> Path:
    torch.manual_seed(0)
    network = codeformer.codeformer_class()(**codeformer.RELEASED_ARCHITECTURE)
    path = directory / "codeformer.pth"
    torch.save({"params_ema": network.state_dict()}, path)
    return path


def measure(pipeline: RestorationPipeline, content: bytes, runs: int) -> tuple[float, dict[str, float], int]:
    pipeline.run(content)  # warm-up: first-use loading and allocation
    seconds: list[float] = []
    stages: dict[str, list[float]] = {}
    faces = 0
    for _ in range(runs):
        started = time.perf_counter()
        result = pipeline.run(content)
        seconds.append(time.perf_counter() - started)
        faces = len(result.faces)
        for name, ms in result.stage_ms.items():
            stages.setdefault(name, []).append(ms)
    return statistics.median(seconds), {name: statistics.median(values) for name, values in stages.items()}, faces


def aligned_crops(analyzer: DlibFaceAnalyzer) -> list[np.ndarray]:
    """The aligned 512x512 crops of every face of the photos."""
    crops: list[np.ndarray] = []
    for photo in PHOTOS:
        image = cv2.imread(str(photo_dir() / photo), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {photo_dir() / photo}")
        crops.extend(align_face(image, face.landmarks)[0] for face in analyzer.analyze(image))
    return crops


def ms_per_face(restore: Callable[[list[np.ndarray]], object], faces: list[np.ndarray], runs: int) -> float:
    restore(faces)  # warm-up
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        restore(faces)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000 / len(faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backends", default="classical,gfpgan,codeformer", help="pipeline runs, comma separated")
    parser.add_argument("--batches", default="1,4,8", help="CodeFormer batch sizes for the per-face cost")
    parser.add_argument("--weights", type=Path, default=None, help="a real GFPGANv1.4.pth; default: random weights")
    parser.add_argument("--codeformer-weights", type=Path, default=None, help="a real codeformer.pth")
    args = parser.parse_args()
    backends = [name for name in args.backends.split(",") if name]
    batches = [int(size) for size in args.batches.split(",") if size]

    analyzer = DlibFaceAnalyzer()
    analyzer.load()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device} ({torch.get_num_threads()} CPU threads); runs: {args.runs} (median)")
    with tempfile.TemporaryDirectory() as scratch:
        restorers: dict[str, Callable[[], Restorer]] = {
            "classical": ClassicalRestorer,
            "gfpgan": lambda: GfpganRestorer(args.weights or random_gfpgan_weights(Path(scratch)), device=device),
            "codeformer": lambda: CodeFormerRestorer(
                args.codeformer_weights or random_codeformer_weights(Path(scratch)), device=device
            ),
        }
        for name in backends:
            restorer = restorers[name]()
            pipeline = RestorationPipeline(restorer, analyzer, ClassicalRestorer(), 256, 92)
            for photo in PHOTOS:
                content = (photo_dir() / photo).read_bytes()
                seconds, stages, faces = measure(pipeline, content, args.runs)
                stage_text = ", ".join(f"{stage} {ms:.0f}" for stage, ms in stages.items())
                print(
                    f"{name:10s} {photo:20s} faces {faces}  {1 / seconds:6.2f} images/s"
                    f"  ({seconds * 1000:.0f} ms: {stage_text})"
                )
            del restorer, pipeline

        aligned = aligned_crops(analyzer)
        for label, classical in (
            ("with deconvolution", ClassicalRestorer()),
            ("without deconvolution", ClassicalRestorer(deblur_faces=False)),
        ):
            blurred = [cv2.GaussianBlur(face, (0, 0), 4.0) for face in aligned]
            for kind, crops in (("sharp", aligned), ("blurred", blurred)):
                cost = ms_per_face(classical.restore_faces, crops, args.runs)
                print(f"classical  {label:22s} {kind:8s} {len(crops)} faces  {cost:7.1f} ms per face")

        if batches:
            weights = args.codeformer_weights or random_codeformer_weights(Path(scratch))
            for size in batches:
                network = CodeFormerRestorer(weights, device=device, batch_size=size)
                network.load()
                crops = (aligned * (size // len(aligned) + 1))[:size]
                cost = ms_per_face(network.restore_faces, crops, args.runs)
                print(f"codeformer batch {size}  {cost:9.0f} ms per face ({cost * size / 1000:.1f} s per batch)")


if __name__ == "__main__":
    main()
