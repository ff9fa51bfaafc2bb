"""Reading and deleting history: what the gRPC API does, free of transport.

A delete is recorded before anything else: the tombstone is written with `purge_pending` in
the same write, so it is its own outbox entry. The files, faces and index entries are then
removed and `image.deleted` published at once when the storage and the broker answer;
otherwise the maintenance loop finishes the work (Library.purge_pending) with the same event
id, and the delete the client asked for stands either way. The event says how many bytes the
files took in the bucket, measured before the first of them is removed and kept with the
tombstone, so a purge finished later announces the same number."""

from __future__ import annotations

import asyncio
import mimetypes

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import NotFound
from facerestore_common.events import EventBus, derived_event_id, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.storage import BlobNotFound, BlobStore
from history_service.downloads import DownloadTokens
from history_service.face_index import FaceIndex
from history_service.faces import FaceRepository
from history_service.items import Item, ItemRepository

log = get_logger(__name__)


class History:
    def __init__(
        self,
        items: ItemRepository,
        blobs: BlobStore,
        bus: EventBus,
        downloads: DownloadTokens,
        faces: FaceRepository | None = None,
        face_index: FaceIndex | None = None,
        # Well within the gateway's deadline: a delete whose event waits is answered, not timed out.
        publish_timeout_seconds: float = 2.0,
    ) -> None:
        self.items = items
        self.faces = faces
        self.face_index = face_index
        self._blobs = blobs
        self._bus = bus
        self.downloads = downloads
        self._publish_timeout = publish_timeout_seconds

    async def get_own(self, user_id: str, image_id: str) -> Item:
        item = await self.items.get(image_id)
        # Someone else's image is indistinguishable from a missing one.
        if item is None or item.user_id != user_id:
            raise NotFound("no such image", reason="not-found")
        return item

    async def delete(self, image_id: str, owner_id: str | None, deleted_by: str) -> Item:
        """Tombstone the item, remove its blobs and announce it; owner_id None means any owner (admin).
        Once the tombstone is written the delete stands: what fails after it is finished later."""
        item = await self.items.get(image_id)
        if item is None or (owner_id is not None and item.user_id != owner_id):
            raise NotFound("no such image", reason="not-found")
        deleted = await self.items.tombstone(image_id, deleted_by)
        if deleted is None:
            raise NotFound("no such image", reason="not-found")
        try:
            await self.purge(deleted, deleted_by)
        except Exception as error:
            log.warning("image_purge_deferred", image_id=image_id, error=repr(error))
        log.info("image_deleted", image_id=image_id, user_id=deleted.user_id, deleted_by=deleted_by)
        return deleted

    async def purge(self, item: Item, deleted_by: str) -> None:
        """Remove what a tombstoned item left behind, announce its deletion and clear its
        `purge_pending` mark; idempotent, and the event id is the same however often it runs."""
        keys = item.blob_keys()
        # Measured before anything is removed and kept with the tombstone, so that the event says
        # what the bucket really held (each object once: versions share the original's thumbnail).
        freed = await self.items.record_freed_bytes(item.id, await self.stored_bytes(keys))
        await self.remove_blobs(keys)
        if self.faces is not None:
            await self.faces.delete_image(item.id)
        if self.face_index is not None:
            # Now rather than on image.deleted, so that searches stop finding it at once.
            await self.face_index.delete_image(item.id)
        envelope = new_envelope(
            "history",
            image_deleted=events_pb2.ImageDeleted(
                image_id=item.id, user_id=item.user_id, deleted_by=deleted_by, freed_bytes=freed
            ),
        )
        envelope.event_id = derived_event_id(item.id, "purged")
        await asyncio.wait_for(self._bus.publish(envelope), self._publish_timeout)
        await self.items.purged(item.id)

    async def stored_bytes(self, keys: list[str]) -> int:
        """The size of the objects stored under `keys` (a missing one takes nothing)."""
        total = 0
        for key in keys:
            try:
                total += await self._blobs.size(key)
            except BlobNotFound:
                pass
        return total

    async def remove_blobs(self, keys: list[str]) -> None:
        for key in keys:
            await self._blobs.delete(key)

    async def content(self, token: str) -> tuple[bytes, str]:
        grant = self.downloads.read(token)
        item = await self.items.get(grant.image_id)
        # An image hidden pending review opens only through an admin's link.
        if item is None or (item.under_review and not grant.review):
            raise NotFound("this link has expired or does not exist", reason="not-found")
        version = item.version(grant.restoration) if grant.restoration else None
        if grant.restoration and version is None:
            raise NotFound("this link has expired or does not exist", reason="not-found")
        key = {
            "original": item.original_key,
            "thumbnail": version.restored_thumbnail_key if version else item.original_thumbnail_key,
            "restored": version.restored_key if version else item.restored_key,
        }[grant.kind]
        if not key:
            raise NotFound("this rendition does not exist yet", reason="not-found")
        try:
            data = await self._blobs.get(key)
        except BlobNotFound:
            raise NotFound("this link has expired or does not exist", reason="not-found") from None
        return data, mimetypes.guess_type(key)[0] or "application/octet-stream"
