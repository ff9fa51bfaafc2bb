"""The photos the load users upload: the real face photos shipped in the insightface wheel
(one to six faces, with and without masks, 6 KB to 130 KB), plus two of them rescaled with
Pillow for a wider spread of sizes (a small phone thumbnail and a larger, denser JPEG)."""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# name -> relative weight in the mix; t1.jpg (six faces) costs the worker most.
FULL_MIX = {
    "t1.jpg": 2,
    "t1-small.jpg": 2,
    "Tom_Hanks_54745.png": 3,
    "mask_black.jpg": 2,
    "mask_blue.jpg": 1,
    "mask_green.jpg": 2,
    "mask_white.jpg": 1,
    "mask_white-large.jpg": 1,
}
# The short chaos test's mix: the same kinds of photo, the cheap ones to restore.
LIGHT_MIX = {"t1-small.jpg": 2, "Tom_Hanks_54745.png": 3, "mask_black.jpg": 1, "mask_green.jpg": 2}
MIXES = {"full": FULL_MIX, "light": LIGHT_MIX}


@dataclass(frozen=True)
class Photo:
    name: str
    content: bytes
    content_type: str
    weight: int


def photo_dir() -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        raise RuntimeError("the insightface wheel (its photos are the load) is not installed: make setup")
    return Path(spec.origin).parent / "data" / "images"


def _rescaled(source: Path, factor: float, quality: int) -> bytes:
    with Image.open(source) as image:
        size = (round(image.width * factor), round(image.height * factor))
        resized = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _content(name: str) -> bytes:
    folder = photo_dir()
    if name == "t1-small.jpg":
        return _rescaled(folder / "t1.jpg", 0.5, 90)
    if name == "mask_white-large.jpg":
        return _rescaled(folder / "mask_white.jpg", 2.0, 97)
    return (folder / name).read_bytes()


def load_photos(mix: str) -> list[Photo]:
    weights = MIXES[mix]
    return [
        Photo(name, _content(name), "image/png" if name.endswith(".png") else "image/jpeg", weight)
        for name, weight in weights.items()
    ]
