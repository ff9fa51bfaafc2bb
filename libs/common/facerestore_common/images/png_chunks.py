"""PNG chunks: where the image ends, its header, and a copy with only the critical chunks.

A PNG is its signature, then chunks (length, type, data, CRC) up to IEND. Ancillary chunks
(text, EXIF, ICC, time, ...) never change the decoded pixels of an 8-bit RGB image without tRNS,
so dropping them is a lossless metadata strip."""

from __future__ import annotations

import struct
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPE_RGB = 2
COLOUR_TYPE_PALETTE = 3


@dataclass(frozen=True)
class Chunk:
    kind: bytes
    start: int  # offset of the length field
    end: int  # offset just after the CRC


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    bit_depth: int
    colour_type: int


def walk(content: bytes) -> list[Chunk]:
    """The chunks from the signature up to and including IEND; ValueError if they do not reach one."""
    if not content.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    chunks: list[Chunk] = []
    pos = len(SIGNATURE)
    while True:
        if pos + 12 > len(content):
            raise ValueError("the chunks end before IEND")
        length, kind = struct.unpack_from(">I4s", content, pos)
        end = pos + 12 + length
        if end > len(content):
            raise ValueError(f"chunk {kind!r} runs past the end of the file")
        chunks.append(Chunk(kind, pos, end))
        if kind == b"IEND":
            return chunks
        pos = end


def header(content: bytes, chunks: list[Chunk]) -> Header:
    first = chunks[0]
    if first.kind != b"IHDR" or first.end - first.start != 12 + 13:
        raise ValueError("the first chunk is not a 13-byte IHDR")
    width, height, bit_depth, colour_type = struct.unpack_from(">IIBB", content, first.start + 8)
    return Header(width, height, bit_depth, colour_type)


def critical_only(content: bytes, chunks: list[Chunk]) -> bytes:
    """The signature, IHDR, PLTE (only for a palette image), every IDAT and IEND, byte for byte."""
    keep = {b"IHDR", b"IDAT", b"IEND"}
    if header(content, chunks).colour_type == COLOUR_TYPE_PALETTE:
        keep.add(b"PLTE")
    return SIGNATURE + b"".join(content[chunk.start : chunk.end] for chunk in chunks if chunk.kind in keep)
