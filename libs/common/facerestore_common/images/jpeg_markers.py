"""JPEG markers: a copy of the first image with only the segments decoding needs.

A JPEG is SOI, then segments (0xFF, a marker byte, a two-byte length, data); each SOS is followed
by entropy-coded data, in which a 0xFF is always followed by 0x00 (a stuffed byte) or a restart
marker, up to the next real marker. Dropping APP0-APP15 (JFIF, EXIF, XMP, ICC, MPF, Photoshop)
and COM leaves the coded image untouched: a lossless metadata strip."""

from __future__ import annotations

import re

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
_SOS = 0xDA
_EOI_MARKER = 0xD9
_APP14 = 0xEE
# Frame headers (SOF0-15; 0xC8 is reserved), Huffman (0xC4) and arithmetic (0xCC) tables,
# quantisation tables, number of lines, restart interval and hierarchical progression.
_DECODING = frozenset({*range(0xC0, 0xC8), *range(0xC9, 0xD0), 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, _SOS})
# Markers without a length: TEM and the restart markers.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_FILL = re.compile(rb"\xff+")
# In entropy-coded data a 0xFF (after any fill bytes) is followed by 0x00 (a stuffed byte) or a
# restart marker; the first 0xFF followed by anything else is the next real marker's.
_MARKER_BYTE_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def strip_metadata(content: bytes) -> bytes | None:
    """SOI, the segments decoding needs with every scan's data, EOI: nothing else, and nothing
    after the first EOI. None when the marker structure cannot be followed to an EOI."""
    if not content.startswith(SOI):
        return None
    kept = [SOI]
    pos = len(SOI)
    while pos < len(content):
        if content[pos] != 0xFF:
            return None
        pos = _skip_fill(content, pos)
        if pos >= len(content):
            return None
        marker = content[pos]
        pos += 1
        if marker == _EOI_MARKER:
            kept.append(EOI)
            return b"".join(kept)
        if marker in _STANDALONE:
            kept.append(bytes((0xFF, marker)))
            continue
        if pos + 2 > len(content):
            return None
        length = int.from_bytes(content[pos : pos + 2], "big")
        if length < 2 or pos + length > len(content):
            return None
        payload = content[pos + 2 : pos + length]
        if marker in _DECODING or (marker == _APP14 and _adobe_marker_needed(payload)):
            kept.append(bytes((0xFF, marker)) + content[pos : pos + length])
        pos += length
        if marker == _SOS:
            end = _end_of_scan(content, pos)
            if end is None:
                return None
            kept.append(content[pos:end])
            pos = end
    return None


def _adobe_marker_needed(payload: bytes) -> bool:
    """The APP14 'Adobe' segment says how the components are coded; transform 1 (YCbCr) is what a
    decoder assumes anyway for three components, any other value (RGB, CMYK, YCCK) must stay."""
    return payload.startswith(b"Adobe") and (len(payload) < 12 or payload[11] != 1)


def _end_of_scan(content: bytes, pos: int) -> int | None:
    """The offset of the first real marker (with its fill bytes) after entropy-coded data."""
    # Searched in C: a photo's scan holds thousands of stuffed bytes.
    found = _MARKER_BYTE_AFTER_SCAN.search(content, pos)
    if found is None:
        return None
    start = found.start()
    while start > pos and content[start - 1] == 0xFF:  # the fill bytes before the marker's own 0xFF
        start -= 1
    return start


def _skip_fill(content: bytes, pos: int) -> int:
    """Past a run of 0xFF bytes (a marker's own 0xFF and any fill bytes before it)."""
    run = _FILL.match(content, pos)
    return run.end() if run else pos
