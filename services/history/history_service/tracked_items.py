"""The `items` collection as every history module uses it: each write, once stored, raises the
library generation (facerestore_common.library_generation) of every user whose items it touched,
so that the gateway's kept answers of those users' image lists and images are known to be stale.

Reads pass straight through. There is no way to the collection but this class's methods (and
it has only the writes history makes), so a new kind of write cannot skip the raise unnoticed:
it has to be added here first.

The users a write touched: the `user_id` the filter names; otherwise, for a filter on `_id`,
the owner of that item (looked up before a delete, after an update, which may have created
it; an item's owner never changes); otherwise the owners of the documents the filter matches,
before the write and after it. A write that matched nothing raises nothing.

A raise that fails (Redis down) is logged and the write stands: the gateway keeps an answer
for a short while only (its page cache's max age), which bounds how long a lost raise leaves a
stale answer served."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from motor.motor_asyncio import AsyncIOMotorCollection, AsyncIOMotorCursor, AsyncIOMotorDatabase
from pymongo.results import DeleteResult, UpdateResult
from redis.exceptions import RedisError

from facerestore_common.library_generation import LibraryGenerations
from facerestore_common.logging import get_logger

log = get_logger(__name__)

Filter = Mapping[str, Any]
Document = dict[str, Any]


def tracked_items(database: AsyncIOMotorDatabase, generations: LibraryGenerations) -> TrackedItems:
    """The one place the `items` collection is taken from."""
    return TrackedItems(database["items"], generations)


def _named_owner(query: Filter) -> str | None:
    owner = query.get("user_id")
    return owner if isinstance(owner, str) and owner else None


def _pinned(query: Filter) -> bool:
    """Whether the filter alone tells whose items a write touches (by owner or by item id)."""
    return _named_owner(query) is not None or "_id" in query


class TrackedItems:
    def __init__(self, collection: AsyncIOMotorCollection, generations: LibraryGenerations) -> None:
        self._collection = collection
        self._generations = generations

    # --- reads -----------------------------------------------------------------------------------

    def find(self, *args: Any, **kwargs: Any) -> AsyncIOMotorCursor:
        return self._collection.find(*args, **kwargs)

    async def find_one(self, *args: Any, **kwargs: Any) -> Document | None:
        doc: Document | None = await self._collection.find_one(*args, **kwargs)
        return doc

    async def count_documents(self, query: Filter, **kwargs: Any) -> int:
        return int(await self._collection.count_documents(query, **kwargs))

    async def create_index(self, keys: Any, **kwargs: Any) -> str:
        return str(await self._collection.create_index(keys, **kwargs))

    # --- writes ----------------------------------------------------------------------------------

    async def update_one(self, query: Filter, update: Mapping[str, Any] | Sequence[Any], **kwargs: Any) -> UpdateResult:
        before = await self._owners_before_update(query)
        result: UpdateResult = await self._collection.update_one(query, update, **kwargs)
        await self._after_update(query, result, before)
        return result

    async def update_many(
        self, query: Filter, update: Mapping[str, Any] | Sequence[Any], **kwargs: Any
    ) -> UpdateResult:
        before = await self._owners_before_update(query)
        result: UpdateResult = await self._collection.update_many(query, update, **kwargs)
        await self._after_update(query, result, before)
        return result

    async def find_one_and_update(
        self, query: Filter, update: Mapping[str, Any] | Sequence[Any], *, upsert: bool = False, **kwargs: Any
    ) -> Document | None:
        before = await self._owners_before_update(query)
        doc: Document | None = await self._collection.find_one_and_update(query, update, upsert=upsert, **kwargs)
        if doc is None and not upsert:
            return None  # matched nothing
        owner = _named_owner(doc or {})
        # The returned document is the one written (unless a projection left its owner out, or an
        # upsert returned the document as it was before: none).
        owners = {owner} if owner else await self._owners(query)
        await self._bump(before | owners)
        return doc

    async def delete_one(self, query: Filter, **kwargs: Any) -> DeleteResult:
        owners = await self._owners(query)  # gone after
        result: DeleteResult = await self._collection.delete_one(query, **kwargs)
        if result.deleted_count:
            await self._bump(owners)
        return result

    async def forget_owner(self, user_id: str) -> None:
        """Remove an erased user's library generation: no key names them once their items are gone."""
        try:
            await self._generations.forget([user_id])
        except RedisError as error:
            # It expires on its own (GENERATION_TTL_SECONDS); nothing reads it once the account is closed.
            log.warning("library_generation_not_forgotten", error=repr(error))

    # --- whose items ------------------------------------------------------------------------------

    async def _owners(self, query: Filter) -> set[str]:
        owner = _named_owner(query)
        if owner is not None:
            return {owner}
        # An item's owner never changes: its id alone finds it, whatever else the filter asks.
        lookup = {"_id": query["_id"]} if "_id" in query else query
        return {doc["user_id"] async for doc in self._collection.find(lookup, {"user_id": 1}) if doc.get("user_id")}

    async def _owners_before_update(self, query: Filter) -> set[str]:
        """The owners of what a filter that names neither matches now: the update may change
        the fields it matched on, and then nothing finds them after it."""
        return set() if _pinned(query) else await self._owners(query)

    async def _after_update(self, query: Filter, result: UpdateResult, before: set[str]) -> None:
        # Matched rather than modified: an update that changed nothing raises needlessly, which
        # costs a kept answer; one whose change went uncounted would leave a stale one served.
        if not result.matched_count and result.upserted_id is None:
            return
        owners = before | await self._owners(query)
        if result.upserted_id is not None and _named_owner(query) is None:
            owners |= await self._owners({"_id": result.upserted_id})
        await self._bump(owners)

    async def _bump(self, owners: set[str]) -> None:
        if not owners:
            return
        try:
            await self._generations.bump(owners)
        except RedisError as error:
            # The write stands; the gateway's max age bounds how long a kept answer misses it.
            log.warning("library_generation_not_raised", users=len(owners), error=repr(error))
