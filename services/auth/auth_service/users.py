"""Users in MongoDB, one document per E.164 phone number, with their verified email
(claimed in its own collection, so one address belongs to one user), their role and
whether they are banned. Every role change is recorded."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from auth_service.metrics import SIGN_UPS
from facerestore_common.activity import ActivityRecorder
from facerestore_common.errors import Conflict, NotFound
from facerestore_common.logging import get_logger, mask_phone
from facerestore_common.timeutil import now_ms

ROLES = ("user", "admin")

log = get_logger(__name__)


@dataclass(frozen=True)
class User:
    id: str
    phone: str
    role: str
    created_at_ms: int
    last_login_at_ms: int
    email: str = ""
    banned: bool = False

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> User:
        return cls(
            id=doc["_id"],
            phone=doc["phone"],
            role=doc["role"],
            created_at_ms=doc["created_at_ms"],
            last_login_at_ms=doc.get("last_login_at_ms", doc["created_at_ms"]),
            email=doc.get("email", ""),
            banned=bool(doc.get("banned", False)),
        )


class UserRepository:
    """`activity`, when given, records sign-ups, role changes and bans for the admins' statistics."""

    def __init__(self, database: AsyncIOMotorDatabase, activity: ActivityRecorder | None = None) -> None:
        self._users = database["users"]
        self._emails = database["user_emails"]
        self._role_changes = database["role_changes"]
        self._activity = activity

    async def _record(self, kind: str, user_id: str, **labels: str) -> None:
        if self._activity is None:
            return
        try:
            await self._activity.record(kind, user_id, **labels)
        except Exception:
            log.error("activity_not_recorded", kind=kind, exc_info=True)

    async def create_indexes(self) -> None:
        await self._users.create_index("phone", unique=True)
        await self._users.create_index("created_at_ms")
        await self._emails.create_index("user_id")
        await self._role_changes.create_index("user_id")

    async def sign_in(self, phone: str, promote_to_admin: bool) -> User:
        """Create the user on first sign-in and record the login; listed admins are promoted."""
        now = now_ms()
        update: dict[str, Any] = {
            "$set": {"last_login_at_ms": now},
            "$setOnInsert": {"_id": uuid.uuid4().hex, "created_at_ms": now, "role": "user", "banned": False},
        }
        created = False
        try:
            result = await self._users.update_one({"phone": phone}, update, upsert=True)
            created = result.upserted_id is not None
        except DuplicateKeyError:
            # Two first sign-ins raced; the other one created the user.
            await self._users.update_one({"phone": phone}, {"$set": update["$set"]})
        user = await self.by_phone(phone)
        if user is None:
            raise RuntimeError(f"user for {mask_phone(phone)} vanished during sign-in")
        if created:
            SIGN_UPS.inc()
            await self._record("user.signed_up", user.id)
        if promote_to_admin and user.role != "admin":
            user = await self.set_role(user.id, "admin", actor="ADMIN_PHONES", via="sign-in")
        return user

    async def record_login(self, user_id: str) -> None:
        await self._users.update_one({"_id": user_id}, {"$set": {"last_login_at_ms": now_ms()}})

    async def get(self, user_id: str) -> User | None:
        doc = await self._users.find_one({"_id": user_id})
        return User.from_document(doc) if doc else None

    async def by_phone(self, phone: str) -> User | None:
        doc = await self._users.find_one({"phone": phone})
        return User.from_document(doc) if doc else None

    async def by_email(self, email: str) -> User | None:
        claim = await self._emails.find_one({"_id": email})
        return await self.get(claim["user_id"]) if claim else None

    async def set_email(self, user_id: str, email: str) -> User:
        """Give the user this verified address, releasing their previous one."""
        try:
            await self._emails.insert_one({"_id": email, "user_id": user_id, "claimed_at_ms": now_ms()})
        except DuplicateKeyError:
            claim = await self._emails.find_one({"_id": email})
            if claim is None or claim["user_id"] != user_id:
                raise Conflict("this email address belongs to another account", reason="email-taken") from None
        previous = await self.get(user_id)
        if previous is None:
            await self._emails.delete_one({"_id": email, "user_id": user_id})
            raise NotFound("no such user", reason="not-found")
        if previous.email and previous.email != email:
            await self._emails.delete_one({"_id": previous.email, "user_id": user_id})
        await self._users.update_one({"_id": user_id}, {"$set": {"email": email}})
        return await self._require(user_id)

    async def set_role(self, user_id: str, role: str, actor: str, via: str) -> User:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        before = await self._require(user_id)
        if before.role != role:
            await self._users.update_one({"_id": user_id}, {"$set": {"role": role}})
            await self._role_changes.insert_one(
                {
                    "_id": uuid.uuid4().hex,
                    "user_id": user_id,
                    "from": before.role,
                    "to": role,
                    "actor": actor,
                    "via": via,
                    "at_ms": now_ms(),
                }
            )
            await self._record("user.role_changed", user_id, **{"from": before.role, "to": role, "via": via})
        return await self._require(user_id)

    async def role_changes(self, user_id: str) -> list[dict[str, Any]]:
        return await self._role_changes.find({"user_id": user_id}).sort("at_ms", 1).to_list(None)

    async def set_banned(self, user_id: str, banned: bool, via: str = "admin") -> User:
        before = await self._require(user_id)
        await self._users.update_one({"_id": user_id}, {"$set": {"banned": banned, "banned_changed_at_ms": now_ms()}})
        if before.banned != banned:
            await self._record("user.banned" if banned else "user.unbanned", user_id, via=via)
        return await self._require(user_id)

    async def get_by_id(self, user_id: str) -> User:
        """The user, or NotFound."""
        return await self._require(user_id)

    async def _require(self, user_id: str) -> User:
        user = await self.get(user_id)
        if user is None:
            raise NotFound("no such user", reason="not-found")
        return user

    async def list(self, limit: int, cursor: str, phone: str = "") -> tuple[list[User], str]:
        query: dict[str, Any] = {"phone": phone} if phone else {}
        if cursor:
            query["_id"] = {"$gt": cursor}
        docs = await self._users.find(query).sort("_id", 1).limit(limit + 1).to_list(None)
        users = [User.from_document(doc) for doc in docs[:limit]]
        next_cursor = users[-1].id if len(docs) > limit else ""
        return users, next_cursor

    async def count(self) -> tuple[int, int]:
        return await self._users.count_documents({}), await self._users.count_documents({"role": "admin"})
