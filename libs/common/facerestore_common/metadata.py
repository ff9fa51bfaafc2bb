"""What a person writes about an image: tags, a note and a location. One set of rules for an
upload (the upload service) and for an edit of the same fields later (the history service).

Notes and locations are Unicode text: any script, emoji, and the sequences emoji are made of
(a zero-width joiner in 🧑‍🚀, variation selectors, the tag characters of regional flags) are
kept, in NFC. Refused: control characters (a note may still hold line breaks and tabs), lone
surrogates, line and paragraph separators, and the bidirectional embedding, override and
isolate controls that can make text display as something other than it is."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from facerestore_common.errors import InvalidArgument

_TAG = re.compile(r"^[\w][\w .-]{0,31}$", re.UNICODE)
MAX_TAGS = 10
MAX_NOTE = 500
MAX_LOCATION = 100
REASON = "invalid-metadata"

# Bidirectional embeddings, overrides and isolates (LRE..RLO, LRI..PDI): format characters that
# reorder what is displayed ("Trojan Source"). The marks LRM and RLM stay allowed.
_BIDI_CONTROLS = frozenset(chr(code) for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


@dataclass(frozen=True)
class ImageMetadata:
    tags: list[str]
    note: str
    location: str


def unicode_text(text: str, field: str, limit: int, *, multiline: bool = False) -> str:
    """Trimmed NFC text of at most `limit` characters, or InvalidArgument naming `field`."""
    text = unicodedata.normalize("NFC", text.strip())
    if len(text) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters", reason=REASON)
    allowed = "\n\t" if multiline else ""
    for char in text:
        if char in allowed:
            continue
        if unicodedata.category(char) in _REFUSED_CATEGORIES or char in _BIDI_CONTROLS:
            raise InvalidArgument(
                f"{field} contains control characters (U+{ord(char):04X} is not allowed)", reason=REASON
            )
    return text


def parse_tags(tags: Iterable[str]) -> list[str]:
    """Trimmed, lower-cased, de-duplicated in first-seen order; blank ones dropped."""
    clean: list[str] = []
    for tag in tags:
        tag = unicodedata.normalize("NFC", tag.strip().lower())
        if not tag:
            continue
        if not _TAG.match(tag):
            raise InvalidArgument(
                "a tag is 1 to 32 letters, digits, spaces, dots, dashes or underscores", reason=REASON
            )
        if tag not in clean:
            clean.append(tag)
    if len(clean) > MAX_TAGS:
        raise InvalidArgument(f"at most {MAX_TAGS} tags", reason=REASON)
    return clean


def parse_note(note: str) -> str:
    return unicode_text(note, "note", MAX_NOTE, multiline=True)


def parse_location(location: str) -> str:
    return unicode_text(location, "location", MAX_LOCATION)


def parse_metadata(tags: Iterable[str], note: str, location: str) -> ImageMetadata:
    return ImageMetadata(tags=parse_tags(tags), note=parse_note(note), location=parse_location(location))
