"""What gets in: the type from the bytes, a bounded decode, no polyglots, and the smallest
correct normalised image (orientation applied, metadata dropped, 8-bit RGB).

The stored bytes are the smallest of the candidates that are right for the upload:
- nothing to change (JPEG or 8-bit RGB PNG, upright, no alpha): the upload with its metadata
  stripped losslessly, verified to decode to the same pixels, or the re-encode if that is smaller;
- any other RGB or grey JPEG (turned, or grey to be stored as RGB): the re-encode at the configured
  quality, or with the upload's own quantisation tables if that is smaller (re-encoding above the
  upload's quality adds bytes, not detail);
- anything else (CMYK, palette, 16-bit, alpha): the re-encode.
`bytes_saved` is negative only when the change must grow the file: grey or palette pixels stored
as RGB (three channels where there was one), or a turned JPEG (no lossless rotation here: the
re-encode starts from decoded pixels, and the upload's 8x8 blocks no longer line up with the new
ones unless its sides are multiples of 16, so its block edges are coded as detail)."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageChops, ImageOps, JpegImagePlugin

from facerestore_common.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType
from facerestore_common.images import jpeg_markers, png_chunks
from facerestore_common.settings import ImageLimitSettings

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = png_chunks.SIGNATURE

# Markup a browser or an interpreter would act on: the tag name and then a byte that ends it, as the
# WHATWG MIME Sniffing standard reads tags (a bare "<svg" turns up in compressed data by chance).
_MARKUP = re.compile(rb"<(?:script|html|\?php|svg|!doctype)[\s/>]", re.IGNORECASE)
# Another format's signature just after a JPEG end-of-image marker, blank padding allowed. Any EOI,
# not only the last: an appended PDF or archive holds the bytes FF D9 by chance often enough.
# A phone's second image (MPF) starts with SOI and is not refused.
_CONTAINER_AFTER_EOI = re.compile(rb"\xff\xd9[\s\x00]*(?:PK\x03\x04|%PDF|Rar!|7z\xbc\xaf\x27\x1c|GIF8|\x89PNG)")
_COMPARE_ROWS = 512


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    max_side: int
    min_side: int
    jpeg_quality: int

    @classmethod
    def from_settings(cls, settings: ImageLimitSettings) -> ImageLimits:
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_side=settings.max_image_side,
            min_side=settings.min_image_side,
            jpeg_quality=settings.jpeg_quality,
        )


@dataclass(frozen=True)
class NormalisedImage:
    content: bytes
    content_type: str
    extension: str
    width: int
    height: int
    sha256: str
    original_bytes: int

    @property
    def stored_bytes(self) -> int:
        return len(self.content)

    @property
    def bytes_saved(self) -> int:
        """Upload size minus stored size (see the module's docstring for when it is negative)."""
        return self.original_bytes - self.stored_bytes


def sniff_type(content: bytes) -> str:
    if content.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if content.startswith(PNG_MAGIC):
        return "image/png"
    raise UnsupportedMediaType("only JPEG and PNG images are accepted", reason="unsupported-media-type")


def normalise(content: bytes, limits: ImageLimits) -> NormalisedImage:
    if len(content) > limits.max_bytes:
        raise PayloadTooLarge(f"the file is larger than {limits.max_bytes} bytes", reason="payload-too-large")
    content_type = sniff_type(content)
    fmt = "JPEG" if content_type == "image/jpeg" else "PNG"
    image = _decode(content, fmt, limits)
    _refuse_polyglot(content, fmt)
    upright = _upright(image)
    rgb = _to_rgb(upright)
    rgb.info = {}  # nothing of the upload's metadata (ICC profile, EXIF, text) goes to the encoder
    stripped = _strip_metadata(content, fmt, image) if upright is image else None
    smallest = _reencoded(rgb, fmt, limits)
    if stripped is not None and len(stripped) > len(smallest):
        stored = smallest  # a smaller re-encode makes the strip, and decoding it to check it, moot
    elif stripped is not None and _same_pixels(stripped, fmt, image):
        stored = stripped  # the lossless strip wins a tie
    else:  # no strip, or one that changed the pixels: a lossy upload also gets its own tables
        stored = min([smallest, *_with_own_tables(rgb, fmt, image)], key=len)
    return NormalisedImage(
        content=stored,
        content_type=content_type,
        extension="jpg" if fmt == "JPEG" else "png",
        width=rgb.width,
        height=rgb.height,
        sha256=hashlib.sha256(stored).hexdigest(),
        original_bytes=len(content),
    )


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


def _refuse_polyglot(content: bytes, fmt: str) -> None:
    """A file that decodes as an image and is also something else (an archive, a page, a script)."""
    if fmt == "PNG":
        try:
            chunks = png_chunks.walk(content)
        except ValueError:
            raise Unprocessable("the PNG's chunks are damaged", reason="undecodable-image") from None
        trailing = chunks[-1].end < len(content)
    else:
        trailing = _CONTAINER_AFTER_EOI.search(content) is not None
    if trailing:
        found = "data after the end of the image"
    elif _MARKUP.search(content):
        found = "markup or script"
    elif _holds_zip(content):
        found = "a ZIP archive"
    else:
        return
    raise Unprocessable(f"the file is an image that also carries {found}", reason="polyglot-file")


def _holds_zip(content: bytes) -> bool:
    try:
        return zipfile.is_zipfile(io.BytesIO(content))
    except zipfile.BadZipFile:  # ZIP records zipfile will not open (e.g. "spans multiple disks") are still ZIP
        return True


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; the same object when it needs no turn."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in range(2, 9):
            return ImageOps.exif_transpose(image)
    except Exception:
        raise Unprocessable("the image's orientation data is corrupt", reason="undecodable-image") from None
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey keeps its top 8 bits; a transparent grey level (rare) is not applied.
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent areas become white, as a viewer would show them on a page.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode == "RGB":
        return image  # not copied: normalise only clears its metadata, after the last look at it
    return image.convert("RGB")


def _strip_metadata(content: bytes, fmt: str, image: Image.Image) -> bytes | None:
    """The upload without its metadata, when the pixels need no change; None otherwise."""
    if image.mode != "RGB" or "transparency" in image.info:
        return None
    if fmt == "JPEG":
        return jpeg_markers.strip_metadata(content)
    chunks = png_chunks.walk(content)  # walked once already: it reaches IEND
    try:
        head = png_chunks.header(content, chunks)
    except ValueError:  # Pillow reads chunks before IHDR; the re-encode puts them in order
        return None
    if (head.bit_depth, head.colour_type) != (8, png_chunks.COLOUR_TYPE_RGB):
        return None  # 16-bit RGB decodes to RGB too, but must not be stored as it is
    return png_chunks.critical_only(content, chunks)


def _same_pixels(candidate: bytes, fmt: str, reference: Image.Image) -> bool:
    """Whether candidate decodes to exactly the reference's RGB pixels (compared band by band)."""
    try:
        with Image.open(io.BytesIO(candidate), formats=[fmt]) as decoded:
            if decoded.mode != "RGB" or decoded.size != reference.size:
                return False
            decoded.load()
            # A band's difference is black (no bounding box) exactly when its pixels are equal.
            return all(
                ImageChops.difference(decoded.crop(box), reference.crop(box)).getbbox() is None
                for box in _bands(reference)
            )
    except Exception:  # a candidate that does not decode is not used; the re-encode always is
        return False


def _bands(image: Image.Image) -> Iterator[tuple[int, int, int, int]]:
    for top in range(0, image.height, _COMPARE_ROWS):
        yield (0, top, image.width, min(top + _COMPARE_ROWS, image.height))


def _reencoded(rgb: Image.Image, fmt: str, limits: ImageLimits) -> bytes:
    if fmt == "PNG":
        return _encode(rgb, "PNG", optimize=True)
    return _encode(rgb, "JPEG", quality=limits.jpeg_quality, optimize=True)


def _with_own_tables(rgb: Image.Image, fmt: str, source: Image.Image) -> list[bytes]:
    """The candidate a lossy upload also gets: its pixels with its own tables (none for PNG)."""
    if fmt == "PNG" or source.mode not in ("RGB", "L") or not isinstance(source, JpegImagePlugin.JpegImageFile):
        return []
    own_tables = _encode_with_tables(rgb, source)
    return [] if own_tables is None else [own_tables]


def _encode_with_tables(rgb: Image.Image, source: JpegImagePlugin.JpegImageFile) -> bytes | None:
    """The pixels re-encoded with the upload's own quantisation tables: no coarser than the upload.
    A grey upload has one table; the chroma of a grey picture is flat, and costs next to nothing."""
    try:
        tables = [source.quantization[key] for key in sorted(source.quantization)]
        if len(tables) == 1:
            tables *= 2
        sampling = JpegImagePlugin.get_sampling(source)  # -1, the encoder's default, when it is not a standard one
        return _encode(rgb, "JPEG", qtables=tables, subsampling=sampling, optimize=True)
    except Exception:  # tables that cannot be written again: the re-encode at the configured quality stands
        return None


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()
