"""Idempotency-Key: the same key from the same user within 24 hours returns the first
upload's job instead of creating a second (as the IETF Idempotency-Key draft describes).

A claim names the image id its upload records its job under. A claim whose upload recorded no
job within the lease (the claim was written but its answer lost, or the process ended midway)
is taken over by the next request with the same file, under the same image id: job ids are
unique, so even a late first attempt cannot make a second image. A release names the claim it
frees, so it never frees a claim taken over since."""

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
    # When the claim was made (or taken over): what a release or a takeover compares against.
    claimed_at_ms: int


def request_fingerprint(content: bytes, tags: list[str], note: str, location: str, options: bytes = b"") -> str:
    """What makes two uploads the same request: the bytes, the metadata and the restoration
    options (serialised deterministically)."""
    digest = hashlib.sha256(content)
    for part in ("\0".join(tags), note, location):
        digest.update(b"\0" + part.encode())
    if options:
        digest.update(b"\0" + options)
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
            claimed_at_ms = now_ms()
            try:
                await self._keys.insert_one(
                    {
                        "_id": doc_id,
                        "image_id": new_image_id,
                        "fingerprint": fingerprint,
                        "created_at_ms": claimed_at_ms,
                    }
                )
                return Claim(image_id=new_image_id, replayed=False, claimed_at_ms=claimed_at_ms)
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
            return Claim(image_id=existing["image_id"], replayed=True, claimed_at_ms=existing["created_at_ms"])
        raise Conflict("this Idempotency-Key is being used right now; retry shortly", reason="idempotency-key-in-use")

    async def take_over(self, user_id: str, key: str, claim: Claim, lease_ms: int) -> Claim | None:
        """Claim anew, under its image id, a key whose upload recorded no job within the lease;
        None while the lease runs or when another request took it over first."""
        if now_ms() - claim.claimed_at_ms < lease_ms:
            return None
        claimed_at_ms = now_ms()
        taken = await self._keys.update_one(
            {"_id": f"{user_id}:{key}", "image_id": claim.image_id, "created_at_ms": claim.claimed_at_ms},
            {"$set": {"created_at_ms": claimed_at_ms}},
        )
        return Claim(claim.image_id, replayed=False, claimed_at_ms=claimed_at_ms) if taken.modified_count else None

    async def release(self, user_id: str, key: str, claim: Claim) -> None:
        """Free a key whose upload failed before its job was recorded, so that a retry with it can succeed."""
        await self._keys.delete_one(
            {"_id": f"{user_id}:{key}", "image_id": claim.image_id, "created_at_ms": claim.claimed_at_ms}
        )
