"""Choosing which version of an image it shows (PATCH /v1/images/{id} preferred_restoration):
only a done one; the item then shows that version's result, quality and status everywhere."""

from __future__ import annotations

from facerestore_common.errors import Conflict, NotFound
from facerestore_common.logging import get_logger
from history_service.history import History
from history_service.items import Item

log = get_logger(__name__)


async def prefer(history: History, user_id: str, image_id: str, restoration_id: str) -> Item:
    item = await history.get_own(user_id, image_id)
    version = item.version(restoration_id)
    if version is None:
        raise NotFound(f"image {image_id} has no restoration {restoration_id!r}", reason="restoration-not-found")
    if item.preferred_restoration == restoration_id:
        return item
    if version.status != "done":
        raise Conflict(
            f"restoration {restoration_id} is {version.status}; only a done one can be preferred",
            reason="restoration-not-done",
        )
    doc = await history.items.versions.prefer(image_id, user_id, version)
    if doc is None:
        # Deleted between the read and the write.
        return await history.get_own(user_id, image_id)
    log.info("restoration_preferred", image_id=image_id, restoration_id=restoration_id)
    return Item.from_document(doc)
