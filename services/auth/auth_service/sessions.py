"""Sessions and refresh tokens. Refresh tokens are opaque, stored only as SHA-256
hashes, and rotated on every use; presenting a rotated one revokes its whole family."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.errors import Unauthenticated
from facerestore_common.timeutil import now_ms


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class RefreshGrant:
    user_id: str
    session_id: str
    refresh_token: str


class SessionStore:
    def __init__(self, database: AsyncIOMotorDatabase, ttl_seconds: int) -> None:
        self._tokens = database["refresh_tokens"]
        self._ttl_ms = ttl_seconds * 1000

    async def create_indexes(self) -> None:
        await self._tokens.create_index("session_id")

    async def _issue(self, user_id: str, session_id: str) -> RefreshGrant:
        token = secrets.token_urlsafe(32)
        now = now_ms()
        await self._tokens.insert_one(
            {
                "_id": _hash(token),
                "user_id": user_id,
                "session_id": session_id,
                "created_at_ms": now,
                "expires_at_ms": now + self._ttl_ms,
                "used": False,
                "revoked": False,
            }
        )
        return RefreshGrant(user_id=user_id, session_id=session_id, refresh_token=token)

    async def start(self, user_id: str) -> RefreshGrant:
        return await self._issue(user_id, uuid.uuid4().hex)

    async def rotate(self, refresh_token: str) -> RefreshGrant:
        """Spend a refresh token and issue its successor in the same session."""
        token_hash = _hash(refresh_token)
        spent = await self._tokens.find_one_and_update(
            {"_id": token_hash, "used": False, "revoked": False}, {"$set": {"used": True, "used_at_ms": now_ms()}}
        )
        if spent is None:
            known = await self._tokens.find_one({"_id": token_hash})
            if known is not None and known["used"]:
                # Reuse of a rotated token: someone else holds this family; end the session.
                await self.revoke(known["session_id"])
            raise Unauthenticated("the refresh token is not valid", reason="invalid-refresh-token")
        if spent["expires_at_ms"] < now_ms():
            raise Unauthenticated("the refresh token has expired", reason="invalid-refresh-token")
        return await self._issue(spent["user_id"], spent["session_id"])

    async def revoke(self, session_id: str) -> None:
        await self._tokens.update_many({"session_id": session_id}, {"$set": {"revoked": True}})
