"""The optional fields that travel with an upload: tags, note, location."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from facerestore_common.errors import InvalidArgument

_TAG = re.compile(r"^[\w][\w .-]{0,31}$", re.UNICODE)
MAX_TAGS = 10
MAX_NOTE = 500
MAX_LOCATION = 100


@dataclass(frozen=True)
class UploadMetadata:
    tags: list[str]
    note: str
    location: str


def _printable(text: str, field: str, limit: int) -> str:
    text = text.strip()
    if len(text) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters", reason="invalid-metadata")
    if any(not char.isprintable() and char not in "\n\t" for char in text):
        raise InvalidArgument(f"{field} contains control characters", reason="invalid-metadata")
    return text


def parse_metadata(tags: Iterable[str], note: str, location: str) -> UploadMetadata:
    clean_tags: list[str] = []
    for tag in tags:
        tag = tag.strip().lower()
        if not tag:
            continue
        if not _TAG.match(tag):
            raise InvalidArgument(
                "a tag is 1 to 32 letters, digits, spaces, dots, dashes or underscores", reason="invalid-metadata"
            )
        if tag not in clean_tags:
            clean_tags.append(tag)
    if len(clean_tags) > MAX_TAGS:
        raise InvalidArgument(f"at most {MAX_TAGS} tags", reason="invalid-metadata")
    return UploadMetadata(
        tags=clean_tags,
        note=_printable(note, "note", MAX_NOTE),
        location=_printable(location, "location", MAX_LOCATION),
    )
