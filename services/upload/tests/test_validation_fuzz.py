"""Whatever bytes arrive, normalise() either stores a well-formed 8-bit RGB image of the size it
reports or refuses with a domain error; it never fails in any other way.

Three sources of input: arbitrary bytes (with and without a JPEG or PNG signature), real photos
from the insightface wheel with random flips, cuts and insertions, and small images Pillow makes
in every mode an upload can arrive in. Derandomized, with no example database: CI runs the same
examples every time and writes nothing."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from facerestore_common.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType
from facerestore_common.images import ImageLimits, normalise

# Small limits keep each example fast, and put the refusals (too small, too large) within reach.
# Pillow's warnings about damaged EXIF and APNG data: the damage is the point here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin"),
    pytest.mark.filterwarnings("ignore:Invalid APNG:UserWarning"),
]

LIMITS = ImageLimits(max_bytes=262_144, max_pixels=1_500_000, max_side=4_000, min_side=8, jpeg_quality=85)
FUZZ = settings(derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOMAIN_ERRORS = (UnsupportedMediaType, Unprocessable, PayloadTooLarge)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _photos() -> dict[str, bytes]:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        pytest.fail("test photos missing: pip install --no-deps insightface==2.1")
    folder = Path(spec.origin).parent / "data" / "images"
    # The big photos cost time on every decode: t1.jpg (1280x886) stands for them.
    names = ("t1.jpg", "mask_green.jpg", "mask_black.jpg", "Tom_Hanks_54745.png")
    return {name: (folder / name).read_bytes() for name in names}


PHOTOS = _photos()


def check(content: bytes) -> None:
    try:
        result = normalise(content, LIMITS)
    except DOMAIN_ERRORS as error:
        event(f"refused: {error.reason}")  # see them with --hypothesis-show-statistics
        return
    event(f"stored {result.content_type}")
    assert result.sha256 == hashlib.sha256(result.content).hexdigest()
    assert result.bytes_saved == len(content) - len(result.content)
    with Image.open(io.BytesIO(result.content)) as image:
        image.load()
        assert image.mode == "RGB"
        assert image.size == (result.width, result.height)
        assert image.format == ("JPEG" if result.content_type == "image/jpeg" else "PNG")
    if result.content_type == "image/png":
        # 8-bit RGB in the header itself: Pillow also decodes 16-bit RGB to mode "RGB".
        assert struct.unpack_from(">BB", result.content, 24) == (8, 2)


# --- arbitrary bytes ------------------------------------------------------------------


@settings(FUZZ, max_examples=2_000)
@given(prefix=st.sampled_from([b"", JPEG_MAGIC, PNG_MAGIC]), body=st.binary(max_size=2_048))
def test_arbitrary_bytes_are_stored_well_formed_or_refused(prefix: bytes, body: bytes) -> None:
    check(prefix + body)


# --- real photos, damaged -------------------------------------------------------------

APPENDIX = [b"PK\x03\x04", b"\xff\xd9", b"<script>", b"IEND\xaeB`\x82", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00"]


def with_fixed_crcs(content: bytes) -> bytes:
    """Each PNG chunk's CRC recomputed, as far as the chunks can be followed, so that damage reaches
    the code behind Pillow's CRC check."""
    fixed, pos = bytearray(content), 8
    while pos + 12 <= len(fixed):
        (length,) = struct.unpack_from(">I", fixed, pos)
        if pos + 12 + length > len(fixed):
            break
        struct.pack_into(">I", fixed, pos + 8 + length, zlib.crc32(fixed[pos + 4 : pos + 8 + length]))
        pos += 12 + length
    return bytes(fixed)


CHUNK_KINDS = [b"tRNS", b"PLTE", b"IHDR", b"IDAT", b"IEND", b"eXIf", b"iCCP", b"tEXt", b"zTXt", b"acTL", b"fcTL"]


def chunk_boundaries(content: bytes) -> list[int]:
    found, pos = [8], 8
    while pos + 12 <= len(content):
        pos += 12 + struct.unpack_from(">I", content, pos)[0]
        found.append(min(pos, len(content)))
    return found


@st.composite
def png_chunk(draw: st.DrawFn) -> bytes:
    kind = draw(st.one_of(st.sampled_from(CHUNK_KINDS), st.binary(min_size=4, max_size=4)))
    if kind == b"eXIf" and draw(st.booleans()):
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = draw(st.integers(0, 9))
        data = exif.tobytes()[6:]  # without the "Exif\0\0" a JPEG needs
    else:
        data = draw(st.binary(max_size=48))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@st.composite
def damaged_photos(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(PHOTOS)))
    content = bytearray(PHOTOS[name])
    for _ in range(draw(st.integers(1, 6))):
        # After the signature (the arbitrary-bytes test covers that); half in the first kilobyte,
        # where the headers and tables are.
        at = draw(st.one_of(st.integers(8, 1_024), st.integers(8, len(content) + 8))) if content else 0
        at = min(at, len(content))
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete", "append", "chunk"]))
        if action == "chunk" and name.endswith(".png"):
            # A well-formed chunk between two others: the chunk walker and the critical-chunk strip.
            boundary = draw(st.sampled_from(chunk_boundaries(bytes(content))))
            content[boundary:boundary] = draw(png_chunk())
        elif action == "flip" and at < len(content):
            content[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del content[at:]
        elif action == "insert":
            content[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del content[at : at + draw(st.integers(1, 64))]
        elif action == "append":
            content += draw(st.sampled_from(APPENDIX)) + draw(st.binary(max_size=64))
    if name.endswith(".png") and draw(st.booleans()):
        return with_fixed_crcs(bytes(content))
    return bytes(content)


@settings(FUZZ, max_examples=1_500)
@given(content=damaged_photos())
def test_damaged_real_photos_are_stored_well_formed_or_refused(content: bytes) -> None:
    check(content)


@st.composite
def png_with_odd_chunks(draw: st.DrawFn) -> bytes:
    """The real PNG with well-formed chunks added between its chunks: a tRNS or PLTE in an RGB
    image, a second IHDR, EXIF orientations, unknown kinds. Often still decodable, so it is the
    stripping and re-encoding that is exercised."""
    content = PHOTOS["Tom_Hanks_54745.png"]
    for _ in range(draw(st.integers(1, 4))):
        boundary = draw(st.sampled_from(chunk_boundaries(content)))  # before IHDR too: Pillow allows it
        content = content[:boundary] + draw(png_chunk()) + content[boundary:]
    return content


@settings(FUZZ, max_examples=1_000)
@given(content=png_with_odd_chunks())
def test_real_png_with_odd_chunks_is_stored_well_formed_or_refused(content: bytes) -> None:
    check(content)


# --- small images in every mode -------------------------------------------------------

# What each format can hold; CMYK, palette and 16-bit grey are the ones to convert with care.
MODES = {"JPEG": ["1", "L", "RGB", "CMYK"], "PNG": ["1", "L", "P", "RGB", "RGBA", "I;16", "LA"]}


@st.composite
def generated_images(draw: st.DrawFn) -> bytes:
    fmt = draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    size = (draw(st.integers(7, 96)), draw(st.integers(7, 96)))  # 7 is too small
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    blank = Image.new(mode, size)
    image = Image.frombytes(mode, size, rng.randbytes(len(blank.tobytes())))
    if mode == "P":
        image.putpalette(rng.randbytes(768))
    params: dict[str, object] = {}
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = draw(st.integers(0, 9))
        params["exif"] = exif
    if fmt == "JPEG":
        params |= {"quality": draw(st.integers(1, 100)), "progressive": draw(st.booleans())}
    elif mode in ("1", "L", "P", "RGB", "I;16") and draw(st.booleans()):
        params["transparency"] = image.getpixel((0, 0))
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


@settings(FUZZ, max_examples=1_000)
@given(content=generated_images())
def test_images_in_every_mode_are_stored_as_8_bit_rgb_or_refused(content: bytes) -> None:
    check(content)
