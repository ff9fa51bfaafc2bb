"""Upload's part of erasing an account (`user.deleted`): the user's job records (each names
the image and carries its tags, note and location), the originals they point to (history
removes them too; an upload history never saw is only known here), their reprocessing
requests, and the user's Idempotency-Key claims (uploads' and restorations'). Idempotent: a
redelivered event finds less to do, or nothing."""

from __future__ import annotations

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.logging import get_logger
from facerestore_common.storage import BlobStore
from upload_service.idempotency import RESTORATION_KEYS, UPLOAD_KEYS

log = get_logger(__name__)


class UploadErasure:
    def __init__(self, database: AsyncIOMotorDatabase, blobs: BlobStore, batch: int = 100) -> None:
        self._jobs = database["jobs"]
        self._keys = [database[UPLOAD_KEYS], database[RESTORATION_KEYS]]
        self._restoration_requests = database["restoration_requests"]
        self._blobs = blobs
        self._batch = batch

    async def __call__(self, envelope: events_pb2.Envelope) -> None:
        if envelope.WhichOneof("payload") != "user_deleted":
            log.info("event_ignored", event_type=envelope.type)
            return
        await self.erase(envelope.user_deleted.user_id)

    async def erase(self, user_id: str) -> int:
        erased = 0
        while docs := await self._jobs.find({"user_id": user_id}).limit(self._batch).to_list(None):
            for doc in docs:
                if doc.get("original_key"):
                    await self._blobs.delete(doc["original_key"])
                await self._jobs.delete_one({"_id": doc["_id"]})
            erased += len(docs)
        await self._restoration_requests.delete_many({"user_id": user_id})
        # Claims are keyed "<user id>:..."; ";" is the character after ":".
        for keys in self._keys:
            await keys.delete_many({"_id": {"$gte": f"{user_id}:", "$lt": f"{user_id};"}})
        log.info("user_uploads_erased", jobs=erased)
        return erased
