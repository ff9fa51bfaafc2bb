"""What gets in: the type from the bytes, a bounded decode, and a normalised re-encode
(orientation applied, metadata dropped, 8-bit RGB)."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from facerestore_common.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    max_side: int
    min_side: int
    jpeg_quality: int


@dataclass(frozen=True)
class NormalisedImage:
    content: bytes
    content_type: str
    extension: str
    width: int
    height: int
    sha256: str
    original_bytes: int


def sniff_type(content: bytes) -> str:
    if content.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if content.startswith(PNG_MAGIC):
        return "image/png"
    raise UnsupportedMediaType("only JPEG and PNG images are accepted", reason="unsupported-media-type")


def _decode(content: bytes, expected_format: str, limits: ImageLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content), formats=[expected_format])
            width, height = image.size
            if width * height > limits.max_pixels or max(width, height) > limits.max_side:
                raise Unprocessable(
                    f"the image is {width}x{height}; at most {limits.max_pixels} pixels and "
                    f"{limits.max_side} pixels a side are accepted",
                    reason="image-too-large",
                )
            image.load()
    except Unprocessable:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Unprocessable("the image decompresses to too many pixels", reason="image-too-large") from None
    except Exception:
        raise Unprocessable("the image could not be decoded", reason="undecodable-image") from None
    if min(image.size) < limits.min_side:
        raise Unprocessable(
            f"the image is {image.width}x{image.height}; faces need at least "
            f"{limits.min_side}x{limits.min_side} pixels",
            reason="image-too-small",
        )
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, as a viewer would show them on a page.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def normalise(content: bytes, limits: ImageLimits) -> NormalisedImage:
    if len(content) > limits.max_bytes:
        raise PayloadTooLarge(f"the file is larger than {limits.max_bytes} bytes", reason="payload-too-large")
    content_type = sniff_type(content)
    image = _decode(content, "JPEG" if content_type == "image/jpeg" else "PNG", limits)
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:
        raise Unprocessable("the image's orientation data is corrupt", reason="undecodable-image") from None
    rgb = _to_rgb(image)
    out = io.BytesIO()
    if content_type == "image/jpeg":
        rgb.save(out, format="JPEG", quality=limits.jpeg_quality, optimize=True)
        extension = "jpg"
    else:
        rgb.save(out, format="PNG", optimize=True)
        extension = "png"
    stored = out.getvalue()
    return NormalisedImage(
        content=stored,
        content_type=content_type,
        extension=extension,
        width=rgb.width,
        height=rgb.height,
        sha256=hashlib.sha256(stored).hexdigest(),
        original_bytes=len(content),
    )
