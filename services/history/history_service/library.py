"""A user's library: their history filtered, what they wrote about an image edited, results rated,
the restored image inline, and every image deleted at once.

Edits of tags and location change what similar-face search filters on, so the face index's
payloads follow them: the item is marked `index_stale` with a token in the same write, the
faces are indexed again, and the mark is cleared only if no later edit replaced the token.
A crash in between leaves the mark, and `Library.sync_stale_index` (run by the maintenance
loop) finishes the work. Deleting everything tombstones every image in one write (the list is
empty at once) and marks each `purge_pending`; `purge_pending` then removes the files, faces and
index entries and announces each deletion, again resumed by the maintenance loop after a crash."""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import Conflict, InvalidArgument, Unprocessable
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.metadata import MAX_NOTE, parse_location, parse_note, parse_tags, unicode_text
from facerestore_common.storage import BlobNotFound, BlobStore
from facerestore_common.timeutil import ms_to_timestamp, now_ms
from history_service.history import History
from history_service.indexing import FaceIndexer
from history_service.items import Item

log = get_logger(__name__)

STATUSES = ("queued", "processing", "done", "failed")
MAX_FILTER_TAGS = 10
MAX_QUERY_WORDS = 10
FILTER_REASON = "invalid-filter"


def _is_separator(char: str) -> bool:
    # Spaces, punctuation and controls part words; letters, digits, marks, symbols (emoji) and
    # format characters (the joiner inside 🧑‍🚀) make them.
    return char.isspace() or unicodedata.category(char)[0] in ("Z", "P") or unicodedata.category(char) == "Cc"


def text_words(text: str) -> list[str]:
    """The words of a text, case-folded and NFKC-normalised, in order."""
    words: list[str] = []
    current: list[str] = []
    for char in unicodedata.normalize("NFKC", text).casefold():
        if _is_separator(char):
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def search_words(tags: Iterable[str], note: str) -> list[str]:
    """What `q` matches: every word of the note and of each tag (stored on the item)."""
    words: set[str] = set(text_words(note))
    for tag in tags:
        words.update(text_words(tag))
    return sorted(words)


@dataclass(frozen=True)
class ListFilters:
    """Filters of a user's list; an empty one does not filter. Bounds are inclusive."""

    statuses: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    created_from_ms: int | None = None
    created_to_ms: int | None = None
    location: str | None = None
    words: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        statuses: Sequence[str] = (),
        tags: Sequence[str] = (),
        created_from_ms: int | None = None,
        created_to_ms: int | None = None,
        location: str = "",
        query: str = "",
    ) -> ListFilters:
        unknown = sorted(set(statuses) - set(STATUSES))
        if unknown:
            raise InvalidArgument(
                f"unknown status {unknown[0]!r}; statuses are {', '.join(STATUSES)}", reason=FILTER_REASON
            )
        if len(tags) > MAX_FILTER_TAGS:
            raise InvalidArgument(f"at most {MAX_FILTER_TAGS} tags", reason=FILTER_REASON)
        if created_from_ms is not None and created_to_ms is not None and created_from_ms > created_to_ms:
            raise InvalidArgument("`from` is after `to`", reason=FILTER_REASON)
        words = tuple(dict.fromkeys(text_words(query)))
        if len(words) > MAX_QUERY_WORDS:
            raise InvalidArgument(f"q has more than {MAX_QUERY_WORDS} words", reason=FILTER_REASON)
        clean_tags = tuple(dict.fromkeys(unicodedata.normalize("NFC", tag.strip().lower()) for tag in tags))
        return cls(
            statuses=tuple(dict.fromkeys(statuses)),
            tags=tuple(tag for tag in clean_tags if tag),
            created_from_ms=created_from_ms,
            created_to_ms=created_to_ms,
            location=unicodedata.normalize("NFC", location.strip()) or None,
            words=words,
        )

    def query(self, user_id: str, *, with_status: bool = True) -> dict[str, Any]:
        """The MongoDB filter: only operators the stand-in (nx-27017) answers like MongoDB
        ($in on arrays, $all, integer ranges; times are epoch milliseconds)."""
        query: dict[str, Any] = {"user_id": user_id, "deleted": False, "sort_key": {"$gt": ""}}
        if with_status and self.statuses:
            query["status"] = {"$in": list(self.statuses)}
        if self.tags:
            query["tags"] = {"$in": list(self.tags)}
        created: dict[str, int] = {}
        if self.created_from_ms is not None:
            created["$gte"] = self.created_from_ms
        if self.created_to_ms is not None:
            created["$lte"] = self.created_to_ms
        if created:
            query["created_at_ms"] = created
        if self.location is not None:
            query["location"] = self.location
        if self.words:
            query["search_words"] = {"$all": list(self.words)}
        return query


@dataclass(frozen=True)
class MetadataPatch:
    """A JSON merge-patch of an image's metadata: None leaves a field as it is."""

    tags: list[str] | None = None
    note: str | None = None
    location: str | None = None

    @classmethod
    def parse(cls, tags: Sequence[str] | None, note: str | None, location: str | None) -> MetadataPatch:
        """The upload's rules, field by field."""
        return cls(
            tags=parse_tags(tags) if tags is not None else None,
            note=parse_note(note) if note is not None else None,
            location=parse_location(location) if location is not None else None,
        )


def feedback_message(feedback: dict[str, Any]) -> dict[str, Any]:
    return {
        "rating": int(feedback.get("rating", 0)),
        "comment": str(feedback.get("comment", "")),
        "given_at": ms_to_timestamp(int(feedback.get("given_at_ms", 0))),
    }


class Library:
    def __init__(
        self,
        history: History,
        blobs: BlobStore,
        bus: EventBus,
        indexer: FaceIndexer | None = None,
        inline_max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._items = history.items.collection
        self._history = history
        self._blobs = blobs
        self._bus = bus
        self._indexer = indexer
        self._inline_max_bytes = inline_max_bytes
        self._purging: asyncio.Task[int] | None = None

    async def create_indexes(self) -> None:
        await self._items.create_index([("user_id", 1), ("status", 1), ("sort_key", -1)])
        await self._items.create_index("purge_pending", sparse=True)
        await self._items.create_index("index_stale", sparse=True)

    # --- reading ---------------------------------------------------------------------------------

    async def list(self, user_id: str, filters: ListFilters, limit: int, cursor: str) -> tuple[list[Item], str]:
        """Newest first. The cursor is the last item's sort key (creation time, then id), unique
        and never changed, so a page follows the previous one exactly however many images are
        added (they sort before it) or deleted meanwhile."""
        query = filters.query(user_id)
        if cursor:
            query["sort_key"] = {"$gt": "", "$lt": cursor}
        docs = await self._items.find(query).sort("sort_key", -1).limit(limit + 1).to_list(None)
        items = [Item.from_document(doc) for doc in docs[:limit]]
        return items, (items[-1].sort_key if len(docs) > limit else "")

    async def counts(self, user_id: str, filters: ListFilters) -> dict[str, int]:
        """Images per status among those every other filter keeps (statuses left out)."""
        query = filters.query(user_id, with_status=False)
        counts = dict.fromkeys(STATUSES, 0)
        for status in STATUSES:
            counts[status] = await self._items.count_documents({**query, "status": status})
        return counts

    async def restored_content(self, item: Item) -> bytes:
        """The restored image's bytes; empty while there is none to show (not restored yet,
        failed, or hidden pending review)."""
        if item.status != "done" or not item.restored_key or item.under_review:
            return b""
        try:
            content = await self._blobs.get(item.restored_key)
        except BlobNotFound:
            return b""
        if len(content) > self._inline_max_bytes:
            raise Unprocessable(
                f"the restored image is larger than {self._inline_max_bytes} bytes; download it from restored_url",
                reason="inline-too-large",
            )
        return content

    # --- editing ---------------------------------------------------------------------------------

    async def update(self, user_id: str, image_id: str, patch: MetadataPatch) -> Item:
        item = await self._history.get_own(user_id, image_id)
        fields: dict[str, Any] = {}
        if patch.tags is not None:
            fields["tags"] = patch.tags
        if patch.note is not None:
            fields["note"] = patch.note
        if patch.location is not None:
            fields["location"] = patch.location
        if not fields:
            return item
        fields["search_words"] = search_words(fields.get("tags", item.tags), fields.get("note", item.note))
        fields["edited_at_ms"] = now_ms()
        reindex = patch.tags is not None or patch.location is not None
        token = uuid.uuid4().hex
        if reindex:
            fields["index_stale"] = token
        doc = await self._items.find_one_and_update(
            {"_id": image_id, "user_id": user_id, "deleted": False},
            {"$set": fields},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            # Deleted between the read and the write.
            return await self._history.get_own(user_id, image_id)
        updated = Item.from_document(doc)
        if reindex:
            await self._reindex(updated, token)
        log.info(
            "image_edited",
            image_id=image_id,
            fields=sorted(key for key in fields if key in ("tags", "note", "location")),
        )
        return updated

    async def _reindex(self, item: Item, token: str) -> None:
        if self._indexer is not None and item.status == "done":
            await self._indexer.index_image(item)
        # Cleared only if no later edit marked the item again (that edit reindexes it itself).
        await self._items.update_one({"_id": item.id, "index_stale": token}, {"$unset": {"index_stale": ""}})

    async def sync_stale_index(self, batch: int = 100) -> int:
        """Index again the faces of items whose edit did not reach the index (a crash in between)."""
        docs = await self._items.find({"index_stale": {"$exists": True}}).limit(batch).to_list(None)
        for doc in docs:
            if doc.get("deleted"):
                await self._items.update_one({"_id": doc["_id"]}, {"$unset": {"index_stale": ""}})
                continue
            await self._reindex(Item.from_document(doc), str(doc["index_stale"]))
        return len(docs)

    async def backfill_search_words(self, batch: int = 200) -> int:
        """Give items projected before `q` existed the words it matches."""
        docs = (
            await self._items.find(
                {"search_words": {"$exists": False}, "sort_key": {"$gt": ""}}, {"tags": 1, "note": 1}
            )
            .limit(batch)
            .to_list(None)
        )
        for doc in docs:
            words = search_words(doc.get("tags", []), doc.get("note", ""))
            await self._items.update_one({"_id": doc["_id"]}, {"$set": {"search_words": words}})
        return len(docs)

    async def backfill_detected_faces(self, batch: int = 100) -> int:
        """List the faces (with boxes) on restored items projected before items listed them."""
        if self._history.faces is None:
            return 0
        return await self._history.items.versions.backfill_detected_faces(self._history.faces, batch)

    # --- feedback --------------------------------------------------------------------------------

    async def give_feedback(self, user_id: str, image_id: str, rating: int, comment: str) -> dict[str, Any]:
        """One rating per image (its owner's); a new one replaces it. Published as
        `feedback.given` with the models that made the result."""
        if not 1 <= rating <= 5:
            raise InvalidArgument("rating is 1 to 5", reason="invalid-rating")
        comment = unicode_text(comment, "comment", MAX_NOTE, multiline=True)
        item = await self._history.get_own(user_id, image_id)
        if item.status != "done":
            raise Conflict("only a restored image can be rated", reason="not-restored")
        given_at_ms = now_ms()
        feedback: dict[str, Any] = {"rating": rating, "comment": comment, "given_at_ms": given_at_ms}
        before = await self._items.find_one_and_update(
            {"_id": image_id, "user_id": user_id, "deleted": False},
            {"$set": {"feedback": feedback}},
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            await self._history.get_own(user_id, image_id)
        previous = (before or {}).get("feedback") or {}
        quality = item.quality
        await self._bus.publish(
            new_envelope(
                "history",
                feedback_given=events_pb2.FeedbackGiven(
                    image_id=image_id,
                    user_id=user_id,
                    rating=rating,
                    has_comment=bool(comment),
                    restorer_model=str(quality.get("restorer_model", "")),
                    analyzer_model=str(quality.get("analyzer_model", "")),
                    backend=str(quality.get("backend", "")),
                    previous_rating=int(previous.get("rating", 0)),
                    given_at=ms_to_timestamp(given_at_ms),
                ),
            )
        )
        log.info("feedback_given", image_id=image_id, rating=rating, replaced=bool(previous))
        return feedback

    # --- deleting everything ---------------------------------------------------------------------

    async def delete_all(self, user_id: str) -> int:
        """Every image of the user disappears from their history at once; the files, faces and
        index entries go right after (purge_pending)."""
        result = await self._items.update_many(
            {"user_id": user_id, "deleted": False},
            {"$set": {"deleted": True, "deleted_by": "user", "deleted_at_ms": now_ms(), "purge_pending": True}},
        )
        log.info("all_images_deleted", user_id=user_id, images=result.modified_count)
        self.start_purge()
        return int(result.modified_count)

    def start_purge(self) -> None:
        if self._purging is None or self._purging.done():
            self._purging = asyncio.create_task(self._purge_all())

    async def wait_for_purge(self) -> None:
        """Until the purge that a delete_all started has finished."""
        if self._purging is not None:
            await asyncio.shield(self._purging)

    async def _purge_all(self) -> int:
        total = 0
        try:
            while purged := await self.purge_pending():
                total += purged
        except Exception:
            log.error("purge_failed", exc_info=True)
        return total

    async def purge_pending(self, batch: int = 50) -> int:
        """Remove what deleted images left behind and announce each deletion; idempotent."""
        docs = await self._items.find({"purge_pending": True}).limit(batch).to_list(None)
        for doc in docs:
            # The same event id however often it is published (two purges racing, a crash before
            # the mark is cleared), so consumers act on it once.
            await self._history.purge(Item.from_document(doc), str(doc.get("deleted_by", "user")))
        return len(docs)

    async def close(self) -> None:
        if self._purging is not None and not self._purging.done():
            self._purging.cancel()
            await asyncio.gather(self._purging, return_exceptions=True)
