"""Erasing a user (`user.deleted`): every item and tombstone, every file made from them, their
faces and index entries, feedback (kept on the items), exports and their archives, and
activity records still waiting to be relayed.

The work is tracked to completion: the consumer acks `user.deleted` only when all of it is
done, and it goes image by image, deleting an item's document last, so a crash half-way
(a killed process, a lost database) leaves exactly the images not yet erased, and the
redelivered event erases those. Progress is kept in `erased_users` under the user's
pseudonym (HMAC of the id), never the id itself.

That record also keeps an erased user erased: events about their images that arrive later
(an upload or a result in flight at the time) are discarded with their files, and an event
applied concurrently with the erasure is undone once it sees the mark (see HistoryProjector)."""

from __future__ import annotations

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.logging import get_logger
from facerestore_common.pseudonym import pseudonym
from facerestore_common.timeutil import now_ms
from history_service.exports import Exports
from history_service.history import History
from history_service.indexing import FaceIndexer
from history_service.items import Item

log = get_logger(__name__)


class UserEraser:
    def __init__(
        self,
        database: AsyncIOMotorDatabase,
        history: History,
        secret: str,
        exports: Exports | None = None,
        indexer: FaceIndexer | None = None,
        batch: int = 25,
    ) -> None:
        self._items = history.items.collection
        self._erased = database["erased_users"]
        # Activity records (search.made) that the relay has not published yet.
        self._activity_outbox = database["activity_outbox"]
        self._history = history
        self._secret = secret
        self._exports = exports
        self._indexer = indexer
        self._batch = batch

    def pseudonym(self, user_id: str) -> str:
        return pseudonym(self._secret, user_id)

    async def is_erased(self, user_id: str) -> bool:
        return bool(user_id) and await self._erased.find_one({"_id": self.pseudonym(user_id)}, {"_id": 1}) is not None

    async def erase(self, user_id: str) -> int:
        """Erase everything history holds of the user; idempotent, resumable. Returns the
        images erased by this call."""
        marker = self.pseudonym(user_id)
        await self._erased.update_one(
            {"_id": marker},
            {"$set": {"state": "erasing"}, "$setOnInsert": {"started_at_ms": now_ms(), "images_erased": 0}},
            upsert=True,
        )
        if self._exports is not None:
            await self._exports.erase_user(user_id)
        erased = 0
        while docs := await self._items.find({"user_id": user_id}).limit(self._batch).to_list(None):
            for doc in docs:
                await self._erase_item(Item.from_document(doc))
            erased += len(docs)
            await self._erased.update_one({"_id": marker}, {"$inc": {"images_erased": len(docs)}})
            log.info("user_erase_progress", user=marker, images_erased=erased)
        if self._indexer is not None:
            await self._indexer.remove_user(user_id)
        elif self._history.faces is not None:
            await self._history.faces.delete_user(user_id)
        await self._activity_outbox.delete_many({"user_id": user_id})
        await self._items.forget_owner(user_id)
        await self._erased.update_one({"_id": marker}, {"$set": {"state": "done", "finished_at_ms": now_ms()}})
        log.info("user_erased", user=marker, images_erased=erased)
        return erased

    async def _erase_item(self, item: Item) -> None:
        await self._history.remove_blobs(item.blob_keys())
        await self.remove_image_data(item.id)
        await self._items.delete_one({"_id": item.id})

    async def remove_image_data(self, image_id: str) -> None:
        if self._indexer is not None:
            await self._indexer.remove_image(image_id)
        elif self._history.faces is not None:
            await self._history.faces.delete_image(image_id)

    async def discard_image(self, image_id: str, keys: list[str]) -> None:
        """An erased user's image that an event brought back: remove it and the files named."""
        doc = await self._items.find_one({"_id": image_id})
        if doc is not None:
            keys = [*keys, *Item.from_document(doc).blob_keys()]
        await self._history.remove_blobs(sorted({key for key in keys if key}))
        await self.remove_image_data(image_id)
        await self._items.delete_one({"_id": image_id})
        if doc is not None and doc.get("user_id"):
            await self._items.forget_owner(doc["user_id"])
        log.info("erased_users_image_discarded", image_id=image_id)
