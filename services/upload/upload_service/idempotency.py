"""Idempotency-Key: the same key from the same user within 24 hours returns the first
upload's job instead of creating a second (as the IETF Idempotency-Key draft describes)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

from facerestore_common.errors import Conflict, InvalidArgument, Unprocessable
from facerestore_common.timeutil import now_ms

KEY_LIFETIME_MS = 24 * 3600 * 1000
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Claim:
    image_id: str
    # True when the key was seen before: the caller answers with that earlier job.
    replayed: bool


def request_fingerprint(content: bytes, tags: list[str], note: str, location: str) -> str:
    digest = hashlib.sha256(content)
    for part in ("\0".join(tags), note, location):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


class IdempotencyKeys:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._keys = database["idempotency_keys"]

    @staticmethod
    def validate(key: str) -> str:
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            raise InvalidArgument(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                reason="invalid-idempotency-key",
            )
        return key

    async def claim(self, user_id: str, key: str, fingerprint: str, new_image_id: str) -> Claim:
        """Claim the key for a new upload, or return the upload that already holds it."""
        doc_id = f"{user_id}:{self.validate(key)}"
        for _ in range(2):
            try:
                await self._keys.insert_one(
                    {"_id": doc_id, "image_id": new_image_id, "fingerprint": fingerprint, "created_at_ms": now_ms()}
                )
                return Claim(image_id=new_image_id, replayed=False)
            except DuplicateKeyError:
                existing = await self._keys.find_one({"_id": doc_id})
            if existing is None:
                continue
            if now_ms() - existing["created_at_ms"] > KEY_LIFETIME_MS:
                await self._keys.delete_one({"_id": doc_id, "created_at_ms": existing["created_at_ms"]})
                continue
            if existing["fingerprint"] != fingerprint:
                raise Unprocessable(
                    "this Idempotency-Key was used for a different upload", reason="idempotency-key-reused"
                )
            return Claim(image_id=existing["image_id"], replayed=True)
        raise Conflict("this Idempotency-Key is being used right now; retry shortly", reason="idempotency-key-in-use")

    async def release(self, user_id: str, key: str, image_id: str) -> None:
        """Free a key whose upload failed, so that a retry with it can succeed."""
        await self._keys.delete_one({"_id": f"{user_id}:{key}", "image_id": image_id})
