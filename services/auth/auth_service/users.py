"""Users in MongoDB, one document per E.164 phone number."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from facerestore_common.logging import mask_phone
from facerestore_common.timeutil import now_ms


@dataclass(frozen=True)
class User:
    id: str
    phone: str
    role: str
    created_at_ms: int
    last_login_at_ms: int

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> User:
        return cls(
            id=doc["_id"],
            phone=doc["phone"],
            role=doc["role"],
            created_at_ms=doc["created_at_ms"],
            last_login_at_ms=doc.get("last_login_at_ms", doc["created_at_ms"]),
        )


class UserRepository:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._users = database["users"]

    async def create_indexes(self) -> None:
        await self._users.create_index("phone", unique=True)
        await self._users.create_index("created_at_ms")

    async def sign_in(self, phone: str, promote_to_admin: bool) -> User:
        """Create the user on first sign-in; record the login; promote listed admins."""
        now = now_ms()
        update: dict[str, Any] = {
            "$set": {"last_login_at_ms": now},
            "$setOnInsert": {"_id": uuid.uuid4().hex, "created_at_ms": now},
        }
        if promote_to_admin:
            update["$set"]["role"] = "admin"
        else:
            update["$setOnInsert"]["role"] = "user"
        try:
            await self._users.update_one({"phone": phone}, update, upsert=True)
        except DuplicateKeyError:
            # Two first sign-ins raced; the other one created the user.
            await self._users.update_one({"phone": phone}, {"$set": update["$set"]})
        doc = await self._users.find_one({"phone": phone})
        if doc is None:
            raise RuntimeError(f"user for {mask_phone(phone)} vanished during sign-in")
        return User.from_document(doc)

    async def get(self, user_id: str) -> User | None:
        doc = await self._users.find_one({"_id": user_id})
        return User.from_document(doc) if doc else None

    async def list(self, limit: int, cursor: str) -> tuple[list[User], str]:
        query: dict[str, Any] = {}
        if cursor:
            query["_id"] = {"$gt": cursor}
        docs = await self._users.find(query).sort("_id", 1).limit(limit + 1).to_list(None)
        users = [User.from_document(doc) for doc in docs[:limit]]
        next_cursor = users[-1].id if len(docs) > limit else ""
        return users, next_cursor

    async def count(self) -> tuple[int, int]:
        return await self._users.count_documents({}), await self._users.count_documents({"role": "admin"})
