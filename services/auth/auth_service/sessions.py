"""Sessions and refresh tokens. Refresh tokens are opaque, stored only as SHA-256
hashes, and rotated on every use; presenting a rotated one revokes its whole family."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.errors import Unauthenticated
from facerestore_common.revocation import SessionRevocations
from facerestore_common.timeutil import now_ms


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class RefreshGrant:
    user_id: str
    session_id: str
    refresh_token: str


class SessionStore:
    def __init__(
        self,
        database: AsyncIOMotorDatabase,
        ttl_seconds: int,
        revocations: SessionRevocations | None = None,
        access_token_ttl_seconds: int = 900,
    ) -> None:
        self._tokens = database["refresh_tokens"]
        self._ttl_ms = ttl_seconds * 1000
        # Without revocations (tests of refresh rotation alone), access tokens simply run out.
        self._revocations = revocations
        self._access_ttl = access_token_ttl_seconds

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

    async def owner(self, refresh_token: str) -> str | None:
        """Whose refresh token this is (used, revoked or expired alike); None for an unknown one."""
        known = await self._tokens.find_one({"_id": _hash(refresh_token)}, {"user_id": 1})
        return str(known["user_id"]) if known is not None else None

    async def revoke(self, session_id: str) -> None:
        """End the session: its refresh tokens stop working, and so do its access tokens."""
        await self._tokens.update_many({"session_id": session_id}, {"$set": {"revoked": True}})
        if self._revocations is not None:
            await self._revocations.revoke(session_id, self._access_ttl + 60)

    async def revoke_user(self, user_id: str) -> int:
        """End every session of the user; returns how many were live."""
        session_ids = await self._tokens.distinct("session_id", {"user_id": user_id, "revoked": False})
        for session_id in session_ids:
            await self.revoke(session_id)
        return len(session_ids)
