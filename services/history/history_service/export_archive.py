"""The export archive, written as a stream: a ZIP (zipstream-ng) of every image's original and
restored file, and a metadata file in JSON and in CSV that names every item, produced chunk by
chunk so that memory stays bounded whatever the history's size.

Images go in stored (JPEG and PNG are compressed already), the metadata deflated. The metadata
rows are spooled to a temporary file (in memory up to 1 MiB, then on disk) while the images
stream, and appended last, so the archive is read from storage once."""

from __future__ import annotations

import csv
import io
import json
import posixpath
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from zipstream import ZIP_DEFLATED, ZIP_STORED, ZipStream

FORMAT = "facerestore-export/1"
SPOOL_MEMORY_BYTES = 1024 * 1024
CSV_COLUMNS = (
    "id",
    "created_at",
    "status",
    "tags",
    "note",
    "location",
    "faces",
    "quality_backend",
    "quality_restorer_model",
    "quality_sharpness_before",
    "quality_sharpness_after",
    "quality_sharpness_gain",
    "quality_identity_mean",
    "feedback_rating",
    "feedback_comment",
    "feedback_given_at",
    "original_file",
    "restored_file",
)
README = """This archive holds every image of your history, as it was when the export was made.

originals/<id>.<ext>   the photo you uploaded, as stored (upright, metadata removed)
restored/<id>.<ext>    the restored result, for images whose restoration finished
metadata.json          every item: id, created_at, status, tags, note, location, quality,
                       feedback and the files above (UTF-8 JSON)
metadata.csv           the same as a table, one row per item (UTF-8 with BOM; tags
                       separated by "; "; cells that would start a spreadsheet formula
                       begin with an apostrophe)

Times are UTC (ISO 8601).
"""


def iso(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _spreadsheet_safe(value: str) -> str:
    # A cell starting with =, +, - or @ is run as a formula by spreadsheet programs (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@dataclass(frozen=True)
class ExportEntry:
    """One history item as the archive describes it."""

    id: str
    created_at_ms: int
    status: str
    tags: list[str]
    note: str
    location: str
    faces: int
    quality: dict[str, Any]
    feedback: dict[str, Any]
    original_key: str = ""
    restored_key: str = ""
    # Hidden by an admin pending review: its owner gets no files of it (as in the API).
    under_review: bool = False
    error: str = ""

    def metadata(self, files: dict[str, str]) -> dict[str, Any]:
        quality = self.quality
        feedback = self.feedback
        return {
            "id": self.id,
            "created_at": iso(self.created_at_ms),
            "status": self.status,
            "tags": list(self.tags),
            "note": self.note,
            "location": self.location,
            "faces": self.faces if self.status == "done" else None,
            "quality": {
                "backend": quality.get("backend", ""),
                "restorer_model": quality.get("restorer_model", ""),
                "analyzer_model": quality.get("analyzer_model", ""),
                "sharpness_before": quality.get("sharpness_before", 0.0),
                "sharpness_after": quality.get("sharpness_after", 0.0),
                "sharpness_gain": quality.get("sharpness_gain", 0.0),
                "identity_min": quality.get("identity_min", 0.0),
                "identity_mean": quality.get("identity_mean", 0.0),
                "duration_ms": quality.get("duration_ms", 0.0),
            }
            if quality
            else None,
            "feedback": {
                "rating": int(feedback.get("rating", 0)),
                "comment": feedback.get("comment", ""),
                "given_at": iso(int(feedback.get("given_at_ms", 0))),
            }
            if feedback
            else None,
            "error": self.error or None,
            "under_review": self.under_review,
            "files": {"original": files.get("original"), "restored": files.get("restored")},
        }


def _csv_row(row: dict[str, Any]) -> list[str]:
    quality = row["quality"] or {}
    feedback = row["feedback"] or {}

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    values = [
        row["id"],
        text(row["created_at"]),
        row["status"],
        "; ".join(row["tags"]),
        row["note"],
        row["location"],
        text(row["faces"]),
        text(quality.get("backend")),
        text(quality.get("restorer_model")),
        text(quality.get("sharpness_before")),
        text(quality.get("sharpness_after")),
        text(quality.get("sharpness_gain")),
        text(quality.get("identity_mean")),
        text(feedback.get("rating")),
        feedback.get("comment", ""),
        text(feedback.get("given_at")),
        text(row["files"]["original"]),
        text(row["files"]["restored"]),
    ]
    return [_spreadsheet_safe(value) for value in values]


def _file_name(kind: str, image_id: str, key: str) -> str:
    extension = posixpath.splitext(key)[1].lower() or ".bin"
    return f"{'originals' if kind == 'original' else 'restored'}/{image_id}{extension}"


def _read_chunks(spool: IO[bytes], chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    spool.seek(0)
    while chunk := spool.read(chunk_size):
        yield chunk


@dataclass
class ArchiveStats:
    items: int = 0
    files: int = 0
    skipped: int = 0


class ArchiveWriter:
    """Yields the bytes of one export's ZIP. Blocking: meant for a worker thread.

    `pages` yields the items in batches; `fetch` returns a stored file's bytes, or None when it
    is gone (the image was deleted while the export ran: such an item is left out entirely);
    `progress(items_done)` is called after every item and may raise to stop the export."""

    def __init__(
        self,
        export_id: str,
        created_at_ms: int,
        pages: Iterable[list[ExportEntry]],
        fetch: Callable[[str], bytes | None],
        progress: Callable[[int], None] = lambda done: None,
    ) -> None:
        self._export_id = export_id
        self._created_at_ms = created_at_ms
        self._pages = pages
        self._fetch = fetch
        self._progress = progress
        self.stats = ArchiveStats()

    def chunks(self) -> Iterator[bytes]:
        archive = ZipStream(compress_type=ZIP_STORED)
        with (
            tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as json_rows,
            tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as csv_rows,
        ):
            csv_text = io.TextIOWrapper(csv_rows, encoding="utf-8", newline="", write_through=True)
            table = csv.writer(csv_text)
            csv_text.write("\ufeff")
            table.writerow(CSV_COLUMNS)
            archive.add(README, "README.txt", compress_type=ZIP_DEFLATED)
            yield from archive.all_files()
            for page in self._pages:
                for entry in page:
                    yield from self._add_entry(archive, entry, json_rows, table)
                    self._progress(self.stats.items)
            csv_text.flush()
            archive.add(self._metadata_json(json_rows), "metadata.json", compress_type=ZIP_DEFLATED)
            archive.add(_read_chunks(csv_rows), "metadata.csv", compress_type=ZIP_DEFLATED)
            yield from archive.finalize()
            csv_text.detach()

    def _add_entry(self, archive: ZipStream, entry: ExportEntry, json_rows: IO[bytes], table: Any) -> Iterator[bytes]:
        contents: dict[str, tuple[str, bytes]] = {}
        if not entry.under_review:
            for kind, key in (("original", entry.original_key), ("restored", entry.restored_key)):
                if not key:
                    continue
                data = self._fetch(key)
                if data is None:
                    if kind == "original":
                        # Its original is gone: the image was deleted while the export ran.
                        self.stats.skipped += 1
                        return
                    continue
                contents[kind] = (_file_name(kind, entry.id, key), data)
        for name, data in contents.values():
            archive.add(data, name)
            yield from archive.all_files()
            self.stats.files += 1
        row = entry.metadata({kind: name for kind, (name, _) in contents.items()})
        json_rows.write((("," if self.stats.items else "") + "\n" + json.dumps(row, ensure_ascii=False)).encode())
        table.writerow(_csv_row(row))
        self.stats.items += 1

    def _metadata_json(self, json_rows: IO[bytes]) -> Iterator[bytes]:
        head = {"format": FORMAT, "export_id": self._export_id, "created_at": iso(self._created_at_ms)}
        yield json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "items": ['
        yield from _read_chunks(json_rows)
        yield f'\n], "count": {self.stats.items}}}\n'.encode()
