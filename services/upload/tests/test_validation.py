"""What the upload service lets in: the type is read from the bytes, the size is checked
before anything is decoded, and what is stored is a re-encoded 8-bit RGB image with the
orientation applied and every piece of metadata (EXIF, GPS) dropped.

Real photos come from the insightface wheel (test data only: located, never imported)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from facerestore_common.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType
from upload_service.validation import ImageLimits, NormalisedImage, normalise

LIMITS = ImageLimits(max_bytes=1_048_576, max_pixels=40_000_000, max_side=12_000, min_side=64, jpeg_quality=92)


@pytest.fixture(scope="module")
def images_dir() -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        pytest.fail("test photos missing: pip install --no-deps insightface==2.1")
    return Path(spec.origin).parent / "data" / "images"


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def stored(result: NormalisedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.content))
    image.load()
    return image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but carries no usable pixel data: decoding it would fail,
    so being refused as too large proves the size was checked before any decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"not zlib") + png_chunk(b"IEND", b"")


def png_chunks(content: bytes) -> list[tuple[bytes, int, int]]:
    """(type, data offset, data length) of each chunk."""
    found, pos = [], 8
    while pos < len(content):
        (length,) = struct.unpack(">I", content[pos : pos + 4])
        found.append((content[pos + 4 : pos + 8], pos + 8, length))
        pos += 12 + length
    return found


# --- accepted photos -------------------------------------------------------------------


def test_real_jpeg_photo_is_accepted_and_described_by_the_stored_bytes(images_dir: Path) -> None:
    original = (images_dir / "t1.jpg").read_bytes()

    result = normalise(original, LIMITS)

    assert result.content_type == "image/jpeg"
    assert result.extension == "jpg"
    assert (result.width, result.height) == (1280, 886)
    assert result.original_bytes == len(original)
    assert result.sha256 == hashlib.sha256(result.content).hexdigest()
    image = stored(result)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == (1280, 886)


def test_real_png_photo_is_accepted_and_stays_png(images_dir: Path) -> None:
    original = (images_dir / "Tom_Hanks_54745.png").read_bytes()

    result = normalise(original, LIMITS)

    assert result.content_type == "image/png"
    assert result.extension == "png"
    assert (result.width, result.height) == (112, 112)
    assert result.sha256 == hashlib.sha256(result.content).hexdigest()
    image = stored(result)
    assert image.format == "PNG"
    assert image.mode == "RGB"
    # PNG is lossless: the pixels survive the re-encode exactly.
    assert image.tobytes() == Image.open(io.BytesIO(original)).convert("RGB").tobytes()


# --- refused types --------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(encode(Image.new("RGB", (128, 128), (200, 10, 10)), "GIF"), id="gif"),
        pytest.param(encode(Image.new("RGB", (128, 128), (200, 10, 10)), "WEBP"), id="webp"),
        pytest.param(b"just some plain text, long enough to look like a file\n" * 10, id="text"),
        pytest.param(b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", id="html"),
        pytest.param(b"", id="empty"),
    ],
)
def test_anything_but_jpeg_or_png_is_refused_as_unsupported(content: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        normalise(content, LIMITS)
    assert caught.value.reason == "unsupported-media-type"


def test_html_behind_a_jpeg_signature_is_refused_as_undecodable() -> None:
    """The type comes from the bytes, but three magic bytes do not make an image."""
    with pytest.raises(Unprocessable) as caught:
        normalise(b"\xff\xd8\xff<html><script>alert(1)</script></html>", LIMITS)
    assert caught.value.reason == "undecodable-image"


# --- broken files ---------------------------------------------------------------------


def test_truncated_jpeg_is_refused_as_undecodable(images_dir: Path) -> None:
    original = (images_dir / "t1.jpg").read_bytes()

    with pytest.raises(Unprocessable) as caught:
        normalise(original[: len(original) // 2], LIMITS)
    assert caught.value.reason == "undecodable-image"


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_png_with_flipped_bytes_in_its_pixel_data_is_refused(images_dir: Path, where: float) -> None:
    original = (images_dir / "Tom_Hanks_54745.png").read_bytes()
    _, start, length = next(chunk for chunk in png_chunks(original) if chunk[0] == b"IDAT")
    damaged = bytearray(original)
    offset = start + int(length * where)
    for index in range(offset, offset + 8):
        damaged[index] ^= 0xFF

    with pytest.raises(Unprocessable) as caught:
        normalise(bytes(damaged), LIMITS)
    assert caught.value.reason == "undecodable-image"


# --- sizes ----------------------------------------------------------------------------


def test_file_over_the_byte_limit_is_refused_before_anything_else() -> None:
    # Not even an image: the size is checked first.
    with pytest.raises(PayloadTooLarge) as caught:
        normalise(b"\xff\xd8\xff" + b"\0" * LIMITS.max_bytes, LIMITS)
    assert caught.value.reason == "payload-too-large"


def test_file_exactly_at_the_byte_limit_is_not_refused_for_its_size(images_dir: Path) -> None:
    original = (images_dir / "t1.jpg").read_bytes()
    padded = original + b"\0" * (LIMITS.max_bytes - len(original))  # bytes after EOI are ignored
    assert len(padded) == LIMITS.max_bytes

    assert normalise(padded, LIMITS).width == 1280


def test_small_png_declaring_30000x30000_pixels_is_refused_as_too_large() -> None:
    bomb = encode(Image.new("1", (30_000, 30_000)), "PNG")
    assert len(bomb) < LIMITS.max_bytes  # a real, valid PNG that passes the byte limit

    with pytest.raises(Unprocessable) as caught:
        normalise(bomb, LIMITS)
    assert caught.value.reason == "image-too-large"


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(30_000, 30_000, id="pillow-bomb-size"),
        pytest.param(7_000, 7_000, id="over-max-pixels"),  # 49 Mpx: under Pillow's own limit
        pytest.param(12_001, 100, id="over-max-side"),
    ],
)
def test_declared_size_is_refused_without_decoding_the_pixels(width: int, height: int) -> None:
    with pytest.raises(Unprocessable) as caught:
        normalise(png_header_only(width, height), LIMITS)
    # Had it been decoded, the missing pixel data would have made it "undecodable-image".
    assert caught.value.reason == "image-too-large"


def test_header_only_png_within_limits_is_refused_as_undecodable() -> None:
    """The control for the test above: the same crafted file at a legal size does get decoded."""
    with pytest.raises(Unprocessable) as caught:
        normalise(png_header_only(640, 480), LIMITS)
    assert caught.value.reason == "undecodable-image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_under_the_minimum_side_is_refused_as_too_small(fmt: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        normalise(encode(Image.new("RGB", (32, 32), (90, 90, 90)), fmt), LIMITS)
    assert caught.value.reason == "image-too-small"


def test_one_short_side_is_enough_to_be_too_small() -> None:
    with pytest.raises(Unprocessable) as caught:
        normalise(encode(Image.new("RGB", (640, 63), (90, 90, 90)), "PNG"), LIMITS)
    assert caught.value.reason == "image-too-small"


def test_image_exactly_at_the_minimum_side_is_accepted() -> None:
    result = normalise(encode(Image.new("RGB", (64, 64), (90, 90, 90)), "PNG"), LIMITS)
    assert (result.width, result.height) == (64, 64)


# --- orientation and metadata ---------------------------------------------------------


def exif_with_gps(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 36.0)
    return exif


def test_exif_orientation_is_applied_to_the_stored_pixels() -> None:
    # 100 wide, 200 high, with a red band along the top; Orientation=6 means "rotate 90° clockwise to view".
    picture = Image.new("RGB", (100, 200), (20, 180, 40))
    picture.paste((250, 0, 0), (0, 0, 100, 30))
    content = encode(picture, "JPEG", quality=95, exif=exif_with_gps(orientation=6))
    assert Image.open(io.BytesIO(content)).getexif()[ExifTags.Base.Orientation] == 6

    result = normalise(content, LIMITS)

    assert (result.width, result.height) == (200, 100)
    image = stored(result)
    assert image.size == (200, 100)
    # After a clockwise turn the top band is on the right.
    red, green, _ = image.getpixel((190, 50))
    assert red > 200 and green < 60
    red, green, _ = image.getpixel((10, 50))
    assert red < 60 and green > 140


def test_exif_and_gps_are_not_stored() -> None:
    picture = Image.new("RGB", (120, 120), (20, 180, 40))
    content = encode(picture, "JPEG", exif=exif_with_gps(orientation=1))
    assert dict(Image.open(io.BytesIO(content)).getexif().get_ifd(ExifTags.IFD.GPSInfo))  # the input has GPS

    result = normalise(content, LIMITS)

    image = stored(result)
    assert "exif" not in image.info
    assert len(image.getexif()) == 0
    assert not image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert b"Exif" not in result.content
    assert b"TestCam" not in result.content


def test_png_text_and_exif_chunks_are_not_stored() -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", "Someone Private")
    content = encode(Image.new("RGB", (80, 80), (1, 2, 3)), "PNG", pnginfo=info, exif=exif_with_gps(orientation=1))
    assert b"Someone Private" in content

    result = normalise(content, LIMITS)

    assert b"Someone Private" not in result.content
    kinds = {kind for kind, _, _ in png_chunks(result.content)}
    assert kinds <= {b"IHDR", b"IDAT", b"IEND"}


# --- colour modes ---------------------------------------------------------------------


def test_cmyk_jpeg_is_stored_as_rgb() -> None:
    # Pure cyan in CMYK is (255, 0, 0, 0); in RGB that is (0, 255, 255).
    content = encode(Image.new("CMYK", (96, 96), (255, 0, 0, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(content)).mode == "CMYK"

    image = stored(normalise(content, LIMITS))

    assert image.mode == "RGB"
    red, green, blue = image.getpixel((48, 48))
    assert red < 30 and green > 225 and blue > 225


def test_16_bit_grayscale_png_is_stored_as_8_bit_rgb_with_the_same_brightness() -> None:
    def level(x: int) -> int:
        if x < 16:
            return 32768  # a mid-grey block on the left
        if x >= 240:
            return 65535  # full white on the right
        return x * 256 + 128  # a ramp in between

    gradient = Image.new("I;16", (256, 64))
    gradient.putdata([level(x) for _ in range(64) for x in range(256)])
    assert gradient.getpixel((8, 32)) == 32768
    content = encode(gradient, "PNG")
    assert Image.open(io.BytesIO(content)).mode == "I;16"

    image = stored(normalise(content, LIMITS))

    assert image.mode == "RGB"
    assert image.getpixel((8, 32)) == (128, 128, 128)
    assert image.getpixel((250, 32)) == (255, 255, 255)
    assert image.getpixel((100, 32)) == (100, 100, 100)


def test_palette_png_is_stored_as_rgb_with_its_colours() -> None:
    picture = Image.new("P", (80, 80), 0)
    picture.putpalette([0, 0, 255, 255, 128, 0] + [0] * (254 * 3))
    picture.paste(1, (40, 0, 80, 80))
    content = encode(picture, "PNG")
    assert Image.open(io.BytesIO(content)).mode == "P"

    image = stored(normalise(content, LIMITS))

    assert image.mode == "RGB"
    assert image.getpixel((10, 10)) == (0, 0, 255)
    assert image.getpixel((70, 10)) == (255, 128, 0)


def test_palette_png_with_a_transparent_index_turns_it_white() -> None:
    picture = Image.new("P", (80, 80), 0)
    picture.putpalette([0, 0, 0, 200, 30, 30] + [0] * (254 * 3))
    picture.paste(1, (40, 0, 80, 80))
    content = encode(picture, "PNG", transparency=0)

    image = stored(normalise(content, LIMITS))

    assert image.mode == "RGB"
    assert image.getpixel((10, 10)) == (255, 255, 255)  # not the black behind the transparency
    assert image.getpixel((70, 10)) == (200, 30, 30)


def test_rgba_png_is_flattened_onto_white() -> None:
    picture = Image.new("RGBA", (90, 90), (0, 0, 0, 0))  # fully transparent black
    picture.paste((0, 0, 200, 255), (30, 0, 60, 90))  # opaque blue
    picture.paste((200, 0, 0, 128), (60, 0, 90, 90))  # half-transparent red
    content = encode(picture, "PNG")

    image = stored(normalise(content, LIMITS))

    assert image.mode == "RGB"
    assert image.getpixel((10, 45)) == (255, 255, 255)
    assert image.getpixel((45, 45)) == (0, 0, 200)
    red, green, blue = image.getpixel((75, 45))
    assert red > 220 and 120 <= green <= 135 and 120 <= blue <= 135


def test_grayscale_with_alpha_png_is_flattened_onto_white() -> None:
    picture = Image.new("LA", (70, 70), (0, 0))
    picture.paste((40, 255), (35, 0, 70, 70))
    image = stored(normalise(encode(picture, "PNG"), LIMITS))

    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (255, 255, 255)
    assert image.getpixel((60, 5)) == (40, 40, 40)
