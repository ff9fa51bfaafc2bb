"""What the upload service lets in: the type is read from the bytes, the size is checked
before anything is decoded, polyglots are refused, and what is stored is an 8-bit RGB image
with the orientation applied, every piece of metadata (EXIF, GPS, ICC) dropped, and no more
bytes than needed (a lossless strip when the pixels need no change).

Real photos come from the insightface wheel (test data only: located, never imported)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms

from facerestore_common.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType
from facerestore_common.images import ImageLimits, NormalisedImage, normalise

LIMITS = ImageLimits(max_bytes=1_048_576, max_pixels=40_000_000, max_side=12_000, min_side=64, jpeg_quality=92)
JPEG_START = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
APP_OR_COMMENT = {*range(0xE0, 0xF0), 0xFE}  # APP0-APP15 and COM: metadata, never needed to decode


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


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def jpeg_markers_before_scan(content: bytes) -> list[int]:
    """The marker of each segment from SOI up to the first SOS."""
    found, pos = [], 2
    while content[pos + 1] != 0xDA:
        found.append(content[pos + 1])
        pos += 2 + struct.unpack(">H", content[pos + 2 : pos + 4])[0]
    return found


def pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("index.html", "<p>not a photo</p>")
        archive.writestr("run.sh", "echo hidden payload\n")
    return out.getvalue()


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


def test_icc_profile_is_not_stored() -> None:
    """Both ways of storing drop it: the lossless strip (8-bit RGB) and the re-encode (grey to RGB)."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for picture in (Image.new("RGB", (80, 80), (1, 2, 3)), Image.new("L", (80, 80), 7)):
        content = encode(picture, "PNG", icc_profile=icc)
        assert b"iCCP" in content

        result = normalise(content, LIMITS)

        assert "icc_profile" not in stored(result).info
        assert b"iCCP" not in result.content


# --- polyglots: an image that is also something else ------------------------------------


def assert_polyglot(content: bytes) -> None:
    with pytest.raises(Unprocessable) as caught:
        normalise(content, LIMITS)
    assert caught.value.reason == "polyglot-file"


def test_png_with_a_zip_appended_is_refused_as_a_polyglot(images_dir: Path) -> None:
    content = (images_dir / "Tom_Hanks_54745.png").read_bytes() + zip_archive()
    assert zipfile.ZipFile(io.BytesIO(content)).namelist() == ["index.html", "run.sh"]  # a working archive...
    Image.open(io.BytesIO(content)).load()  # ...and an image Pillow decodes without complaint

    assert_polyglot(content)


def test_png_with_a_zip_hidden_in_a_private_chunk_is_refused(images_dir: Path) -> None:
    """Nothing follows IEND here: it is the ZIP itself that is found."""
    original = (images_dir / "Tom_Hanks_54745.png").read_bytes()
    iend = original.rindex(b"IEND") - 4
    content = original[:iend] + png_chunk(b"zIPp", zip_archive()) + original[iend:]
    Image.open(io.BytesIO(content)).load()
    assert zipfile.is_zipfile(io.BytesIO(content))

    assert_polyglot(content)


def test_jpeg_with_a_zip_appended_is_refused_as_a_polyglot(images_dir: Path) -> None:
    content = (images_dir / "t1.jpg").read_bytes() + zip_archive()
    assert zipfile.ZipFile(io.BytesIO(content)).namelist() == ["index.html", "run.sh"]
    Image.open(io.BytesIO(content)).load()

    assert_polyglot(content)


def test_zip_records_that_make_zipfile_raise_are_refused_not_a_crash(images_dir: Path) -> None:
    # A ZIP64 locator claiming several disks: zipfile.is_zipfile raises BadZipFile instead of answering.
    tail = b"PK\x06\x07" + struct.pack("<LQL", 0, 0, 2) + b"PK\x05\x06" + b"\0" * 18
    content = (images_dir / "t1.jpg").read_bytes() + tail
    with pytest.raises(zipfile.BadZipFile):
        zipfile.is_zipfile(io.BytesIO(content))

    assert_polyglot(content)


@pytest.mark.parametrize("junk", [b"\0", b"trailing bytes that are no chunk", bytes(range(256))])
def test_png_with_anything_after_iend_is_refused(images_dir: Path, junk: bytes) -> None:
    content = (images_dir / "Tom_Hanks_54745.png").read_bytes() + junk
    Image.open(io.BytesIO(content)).load()

    assert_polyglot(content)


def test_jpeg_with_a_script_in_a_comment_is_refused(images_dir: Path) -> None:
    content = after_soi((images_dir / "t1.jpg").read_bytes(), jpeg_segment(0xFE, b"<script>alert(1)</script>"))
    assert Image.open(io.BytesIO(content)).info["comment"].startswith(b"<script>")

    assert_polyglot(content)


def test_html_after_the_last_jpeg_eoi_is_refused(images_dir: Path) -> None:
    content = (images_dir / "t1.jpg").read_bytes() + b"\n<!DOCTYPE html><HTML><body onload=alert(1)></body></HTML>"

    assert_polyglot(content)


@pytest.mark.parametrize(
    "marker", [b"<svg onload=alert(1)>", b"<?php system($_GET['c']); ?>", b"<ScRiPt/src=//x.example>"]
)
def test_markup_in_a_png_text_chunk_is_refused(images_dir: Path, marker: bytes) -> None:
    original = (images_dir / "Tom_Hanks_54745.png").read_bytes()
    ihdr_end = 8 + 12 + 13
    content = original[:ihdr_end] + png_chunk(b"tEXt", b"Comment\0" + marker) + original[ihdr_end:]
    Image.open(io.BytesIO(content)).load()

    assert_polyglot(content)


@pytest.mark.parametrize(
    "container",
    [b"%PDF-1.7\n", b"Rar!\x1a\x07\x00", b"7z\xbc\xaf\x27\x1c\x00\x04", b"GIF89a", b"\x89PNG\r\n\x1a\n"],
    ids=["pdf", "rar", "7z", "gif", "png"],
)
def test_another_format_after_the_jpeg_eoi_is_refused(images_dir: Path, container: bytes) -> None:
    content = (images_dir / "t1.jpg").read_bytes() + container + bytes(range(256)) * 4

    assert_polyglot(content)


def test_appended_pdf_is_refused_even_when_its_own_bytes_hold_an_eoi(images_dir: Path) -> None:
    """Compressed PDF streams hold the bytes FF D9 by chance: the last EOI is then inside the PDF."""
    pdf = b"%PDF-1.7\n1 0 obj <</Length 9>> stream\n\x12\xff\xd9\x34binary\nendstream endobj\n%%EOF\n"
    content = (images_dir / "t1.jpg").read_bytes() + pdf
    assert content.rindex(b"\xff\xd9") > len(content) - len(pdf)

    assert_polyglot(content)


def test_a_phone_style_second_image_after_the_first_eoi_is_accepted_and_dropped(images_dir: Path) -> None:
    """Phones store a second picture (MPF, as in an MPO file) after the first image's EOI."""
    photo = Image.open(images_dir / "t1.jpg")
    content = encode(photo, "MPO", save_all=True, append_images=[photo.resize((320, 222))], quality=60)
    assert content.count(JPEG_START) == 2

    result = normalise(content, LIMITS)

    assert (result.width, result.height) == (1280, 886)
    assert result.content.count(JPEG_START) == 1
    assert np.array_equal(pixels(result.content), pixels(content))
    assert result.bytes_saved > 0


# --- never larger than needed ---------------------------------------------------------

SHIPPED_PHOTOS = [
    "t1.jpg",
    "Tom_Hanks_54745.png",
    "mask_black.jpg",
    "mask_blue.jpg",
    "mask_green.jpg",
    "mask_white.jpg",
]


def test_the_shipped_photo_list_is_complete(images_dir: Path) -> None:
    assert sorted(path.name for path in images_dir.iterdir()) == sorted(SHIPPED_PHOTOS)


@pytest.mark.parametrize("name", SHIPPED_PHOTOS)
def test_every_real_photo_is_accepted_and_never_stored_larger(images_dir: Path, name: str) -> None:
    original = (images_dir / name).read_bytes()

    result = normalise(original, LIMITS)

    image = stored(result)
    assert image.mode == "RGB"
    assert image.size == (result.width, result.height) == Image.open(io.BytesIO(original)).size
    assert result.stored_bytes == len(result.content)
    assert result.bytes_saved == len(original) - len(result.content) >= 0


def test_real_jpeg_with_exif_and_gps_is_stripped_losslessly_and_stored_smaller(images_dir: Path) -> None:
    exif = exif_with_gps(orientation=1).tobytes()
    xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><exif:GPSLatitude>52,31N</exif:GPSLatitude></x:xmpmeta>"
    original = (images_dir / "t1.jpg").read_bytes()
    content = after_soi(original, jpeg_segment(0xE1, exif), jpeg_segment(0xE1, xmp))
    assert Image.open(io.BytesIO(content)).getexif().get_ifd(ExifTags.IFD.GPSInfo)

    result = normalise(content, LIMITS)

    image = stored(result)
    assert len(image.getexif()) == 0 and "xmp" not in image.info
    assert b"Exif" not in result.content and b"GPS" not in result.content and b"TestCam" not in result.content
    assert np.array_equal(pixels(result.content), pixels(content))
    # Everything before the scan that is not metadata, and the scan itself, is kept byte for byte:
    # what is saved is the EXIF, the XMP and t1's own JFIF header (18 bytes), nothing else.
    assert result.bytes_saved == len(content) - len(original) + 18
    assert not APP_OR_COMMENT & set(jpeg_markers_before_scan(result.content))


def test_real_camera_metadata_is_stripped_from_a_progressive_jpeg_without_touching_pixels(images_dir: Path) -> None:
    original = (images_dir / "mask_black.jpg").read_bytes()
    assert Image.open(io.BytesIO(original)).info.keys() >= {"exif", "xmp", "photoshop", "progressive"}

    result = normalise(original, LIMITS)

    assert np.array_equal(pixels(result.content), pixels(original))
    assert stored(result).info.get("progressive") == 1
    assert not APP_OR_COMMENT & set(jpeg_markers_before_scan(result.content))
    assert result.bytes_saved > 2_500  # EXIF, XMP and Photoshop blocks


def test_already_optimised_jpeg_is_not_stored_larger(images_dir: Path) -> None:
    content = encode(Image.open(images_dir / "t1.jpg"), "JPEG", quality=60, optimize=True)
    reencoded = encode(Image.open(io.BytesIO(content)), "JPEG", quality=LIMITS.jpeg_quality, optimize=True)
    assert len(reencoded) > len(content)  # what re-encoding every upload used to store

    result = normalise(content, LIMITS)

    assert result.stored_bytes <= len(content)
    assert result.bytes_saved >= 0
    assert np.array_equal(pixels(result.content), pixels(content))


def test_turned_low_quality_jpeg_is_re_encoded_with_its_own_tables_not_a_higher_quality(images_dir: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    content = encode(Image.open(images_dir / "t1.jpg"), "JPEG", quality=60, exif=exif)
    turned = Image.open(io.BytesIO(content)).transpose(Image.Transpose.ROTATE_270)
    at_configured_quality = encode(turned, "JPEG", quality=LIMITS.jpeg_quality, optimize=True)

    result = normalise(content, LIMITS)

    assert (result.width, result.height) == (886, 1280)
    assert stored(result).quantization == Image.open(io.BytesIO(content)).quantization
    assert result.stored_bytes < len(at_configured_quality) // 2


def test_black_and_white_jpeg_is_stored_as_rgb_with_its_own_tables(images_dir: Path) -> None:
    """An old black-and-white photo: stored as RGB (three channels where there was one), but with its
    own quantisation, not re-encoded at the higher configured quality (40% larger for this one)."""
    content = encode(Image.open(images_dir / "t1.jpg").convert("L"), "JPEG", quality=60)
    grey = Image.open(io.BytesIO(content))
    at_configured_quality = encode(grey.convert("RGB"), "JPEG", quality=LIMITS.jpeg_quality, optimize=True)
    assert len(at_configured_quality) > len(content) * 1.3

    result = normalise(content, LIMITS)

    image = stored(result)
    assert image.mode == "RGB"
    assert image.quantization[0] == grey.quantization[0]
    assert np.abs(pixels(result.content).astype(int) - pixels(content).astype(int)).mean() < 0.1
    assert -len(content) // 50 < result.bytes_saved < 0  # the flat chroma costs under 2%


def test_jpeg_coded_as_rgb_keeps_the_adobe_marker_it_needs(images_dir: Path) -> None:
    """Without its APP14 'Adobe' segment (transform 0) it would be decoded as YCbCr: wrong colours."""
    content = encode(Image.open(images_dir / "t1.jpg"), "JPEG", quality=30, keep_rgb=True)
    assert b"Adobe" in content
    # A high configured quality, so the lossless strip is the smaller candidate and is what is stored.
    limits = dataclasses.replace(LIMITS, jpeg_quality=100)

    result = normalise(content, limits)

    assert jpeg_markers_before_scan(result.content).count(0xEE) == 1
    assert np.array_equal(pixels(result.content), pixels(content))


def test_jpeg_whose_colours_need_its_jfif_header_is_re_encoded_not_stripped(images_dir: Path) -> None:
    """With a JFIF header, libjpeg reads three components as YCbCr; without one, components labelled
    'R', 'G', 'B' are read as RGB. Stripping would change every colour: the decode check catches it."""
    content = bytearray(encode(Image.open(images_dir / "t1.jpg"), "JPEG", quality=30))
    frame, scan = content.index(b"\xff\xc0"), content.index(b"\xff\xda")
    for index, label in enumerate(b"RGB"):
        content[frame + 10 + 3 * index] = label  # component id in the frame header
        content[scan + 5 + 2 * index] = label  # and in the scan header
    original = pixels(bytes(content)).astype(int)

    result = normalise(bytes(content), LIMITS)

    # The colours are right (the strip would be off by about 54 levels on average): a re-encode.
    assert np.abs(pixels(result.content).astype(int) - original).mean() < 2


def test_real_png_keeps_its_pixels_and_is_not_stored_larger(images_dir: Path) -> None:
    original = (images_dir / "Tom_Hanks_54745.png").read_bytes()
    with_text = original[:33] + png_chunk(b"tEXt", b"Author\0" + b"Someone Private " * 64) + original[33:]

    for content in (original, with_text):
        result = normalise(content, LIMITS)

        assert np.array_equal(pixels(result.content), pixels(original))
        assert result.bytes_saved >= 0
        assert {kind for kind, _, _ in png_chunks(result.content)} == {b"IHDR", b"IDAT", b"IEND"}
    assert normalise(with_text, LIMITS).content == normalise(original, LIMITS).content


def test_png_with_a_chunk_before_its_header_is_stored_in_order(images_dir: Path) -> None:
    """Pillow reads it; the spec wants IHDR first. Found by the fuzz tests as a crash."""
    original = (images_dir / "Tom_Hanks_54745.png").read_bytes()
    content = original[:8] + png_chunk(b"tEXt", b"Comment\0first") + original[8:]
    Image.open(io.BytesIO(content)).load()

    result = normalise(content, LIMITS)

    assert png_chunks(result.content)[0][0] == b"IHDR"
    assert b"first" not in result.content
    assert np.array_equal(pixels(result.content), pixels(original))


def test_16_bit_rgb_png_is_stored_as_8_bit(images_dir: Path) -> None:
    """Pillow decodes it to 8-bit RGB, so a strip would pass the pixel check: its header must not be
    kept. (The 8-bit re-encode is the smaller file anyway; the fuzz tests check every stored header.)"""
    photo = np.asarray(Image.open(images_dir / "Tom_Hanks_54745.png").convert("RGB")).astype(">u2") * 257
    ihdr = struct.pack(">IIBBBBB", 112, 112, 16, 2, 0, 0, 0)
    rows = b"".join(b"\0" + row.tobytes() for row in photo)
    content = (
        PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")
    )
    assert Image.open(io.BytesIO(content)).mode == "RGB"

    result = normalise(content, LIMITS)

    assert result.content[24] == 8  # IHDR bit depth
    assert np.array_equal(pixels(result.content), pixels(content))
