"""Reading and deleting history: what the gRPC API does, free of transport."""

from __future__ import annotations

import mimetypes

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import NotFound
from facerestore_common.events import EventBus, new_envelope
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
    ) -> None:
        self.items = items
        self.faces = faces
        self.face_index = face_index
        self._blobs = blobs
        self._bus = bus
        self.downloads = downloads

    async def get_own(self, user_id: str, image_id: str) -> Item:
        item = await self.items.get(image_id)
        # Someone else's image is indistinguishable from a missing one.
        if item is None or item.user_id != user_id:
            raise NotFound("no such image", reason="not-found")
        return item

    async def delete(self, image_id: str, owner_id: str | None, deleted_by: str) -> Item:
        """Tombstone the item, remove its blobs and announce it; owner_id None means any owner (admin)."""
        item = await self.items.get(image_id)
        if item is None or (owner_id is not None and item.user_id != owner_id):
            raise NotFound("no such image", reason="not-found")
        deleted = await self.items.tombstone(image_id, deleted_by)
        if deleted is None:
            raise NotFound("no such image", reason="not-found")
        await self.remove_blobs(deleted.blob_keys())
        if self.faces is not None:
            await self.faces.delete_image(image_id)
        if self.face_index is not None:
            # At once, so that searches stop finding it before the image.deleted event is consumed.
            await self.face_index.delete_image(image_id)
        await self._bus.publish(
            new_envelope(
                "history",
                image_deleted=events_pb2.ImageDeleted(
                    image_id=image_id, user_id=deleted.user_id, deleted_by=deleted_by
                ),
            )
        )
        log.info("image_deleted", image_id=image_id, user_id=deleted.user_id, deleted_by=deleted_by)
        return deleted

    async def remove_blobs(self, keys: list[str]) -> None:
        for key in keys:
            await self._blobs.delete(key)

    async def content(self, token: str) -> tuple[bytes, str]:
        grant = self.downloads.read(token)
        item = await self.items.get(grant.image_id)
        # An image hidden pending review opens only through an admin's link.
        if item is None or (item.under_review and not grant.review):
            raise NotFound("this link has expired or does not exist", reason="not-found")
        key = {
            "original": item.original_key,
            "thumbnail": item.original_thumbnail_key,
            "restored": item.restored_key,
        }[grant.kind]
        if not key:
            raise NotFound("this rendition does not exist yet", reason="not-found")
        try:
            data = await self._blobs.get(key)
        except BlobNotFound:
            raise NotFound("this link has expired or does not exist", reason="not-found") from None
        return data, mimetypes.guess_type(key)[0] or "application/octet-stream"
