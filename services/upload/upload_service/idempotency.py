"""Idempotency-Key: the same key from the same user within 24 hours returns the first
request's answer instead of making a second (as the IETF Idempotency-Key draft describes).
Uploads and restorations (another version of an image) share this: each kind keeps its keys in
its own collection, and a restoration's key is scoped to the user and the image.

A claim names the id of the record its request makes (an upload's image id, a restoration's
event id). A claim whose request recorded nothing within the lease (the claim was written but
its answer lost, or the process ended midway) is taken over by the next request with the same
body, under the same id: record ids are unique, so even a late first attempt cannot make a
second record. A release names the claim it frees, so it never frees a claim taken over since."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from facerestore.events.v1 import events_pb2
from facerestore_common.errors import Conflict, InvalidArgument, Unavailable, Unprocessable
from facerestore_common.logging import get_logger
from facerestore_common.timeutil import now_ms

log = get_logger(__name__)

KEY_LIFETIME_MS = 24 * 3600 * 1000
MAX_KEY_LENGTH = 255
# Each kind's claims, keyed "<user id>:<key>" (uploads) or "<user id>:<image id>:<key>" (restorations).
UPLOAD_KEYS = "idempotency_keys"
RESTORATION_KEYS = "restoration_idempotency_keys"

Made = TypeVar("Made")


@dataclass(frozen=True)
class Claim:
    # The id the request records its result under.
    record_id: str
    # True when the key was seen before: the caller answers with that earlier record.
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


def options_as_asked(options: events_pb2.RestorationOptions | None, requested_model: str) -> bytes:
    """The options as the client asked for them (the model "auto" if it asked for that), for
    comparing requests: a retry is the same request however "auto" resolves meanwhile."""
    if options is None:
        return b""
    asked = events_pb2.RestorationOptions()
    asked.CopyFrom(options)
    asked.model = requested_model or options.model
    return asked.SerializeToString(deterministic=True)


def options_fingerprint(options: events_pb2.RestorationOptions, requested_model: str) -> str:
    """What makes two restorations of one image the same request: the options as asked."""
    return hashlib.sha256(options_as_asked(options, requested_model)).hexdigest()


class IdempotencyKeys:
    """One kind's claims. `owner` is whose key it is: the user, or for a restoration the user
    and the image ("<user id>:<image id>")."""

    def __init__(self, database: AsyncIOMotorDatabase, subject: str = "upload", collection: str = UPLOAD_KEYS) -> None:
        self._keys = database[collection]
        # What the key's requests make, for the answers ("an upload", "a restoration").
        self.subject = subject

    @classmethod
    def for_restorations(cls, database: AsyncIOMotorDatabase) -> IdempotencyKeys:
        return cls(database, "restoration", RESTORATION_KEYS)

    async def create_indexes(self) -> None:
        await self._keys.create_index("created_at_ms")

    async def purge_expired(self) -> int:
        """Remove the claims older than a key's lifetime (a claim is otherwise only removed when
        its key is used again, and most never are); returns how many went."""
        result = await self._keys.delete_many({"created_at_ms": {"$lt": now_ms() - KEY_LIFETIME_MS}})
        return result.deleted_count

    @staticmethod
    def validate(key: str) -> str:
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            raise InvalidArgument(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                reason="invalid-idempotency-key",
            )
        return key

    def in_use(self) -> Conflict:
        return Conflict(
            f"a {self.subject} with this Idempotency-Key is still in progress; retry shortly",
            reason="idempotency-key-in-use",
        )

    async def claim(self, owner: str, key: str, fingerprint: str, new_record_id: str) -> Claim:
        """Claim the key for a new request, or return the record of the request that already holds it."""
        doc_id = f"{owner}:{self.validate(key)}"
        for _ in range(2):
            claimed_at_ms = now_ms()
            try:
                await self._keys.insert_one(
                    {
                        "_id": doc_id,
                        "record_id": new_record_id,
                        "fingerprint": fingerprint,
                        "created_at_ms": claimed_at_ms,
                    }
                )
                return Claim(record_id=new_record_id, replayed=False, claimed_at_ms=claimed_at_ms)
            except DuplicateKeyError:
                existing = await self._keys.find_one({"_id": doc_id})
            if existing is None:
                continue
            if now_ms() - existing["created_at_ms"] > KEY_LIFETIME_MS:
                await self._keys.delete_one({"_id": doc_id, "created_at_ms": existing["created_at_ms"]})
                continue
            if existing["fingerprint"] != fingerprint:
                raise Unprocessable(
                    f"this Idempotency-Key was used for a different {self.subject}", reason="idempotency-key-reused"
                )
            # Upload claims written before restorations had keys name their record "image_id".
            record_id = existing["record_id"] if "record_id" in existing else existing["image_id"]
            return Claim(record_id=record_id, replayed=True, claimed_at_ms=existing["created_at_ms"])
        raise self.in_use()

    async def take_over(self, owner: str, key: str, claim: Claim, lease_ms: int) -> Claim | None:
        """Claim anew, under its record id, a key whose request recorded nothing within the lease;
        None while the lease runs or when another request took it over first."""
        if now_ms() - claim.claimed_at_ms < lease_ms:
            return None
        claimed_at_ms = now_ms()
        taken = await self._keys.update_one(
            {"_id": f"{owner}:{key}", "created_at_ms": claim.claimed_at_ms},
            {"$set": {"record_id": claim.record_id, "created_at_ms": claimed_at_ms}},
        )
        return Claim(claim.record_id, replayed=False, claimed_at_ms=claimed_at_ms) if taken.modified_count else None

    async def release(self, owner: str, key: str, claim: Claim) -> None:
        """Free a key whose request failed before its record was made, so that a retry with it can succeed."""
        await self._keys.delete_one({"_id": f"{owner}:{key}", "created_at_ms": claim.claimed_at_ms})


class KeyedRequests:
    """Runs one kind's requests under Idempotency-Keys: a repeat answers with the first request's
    record; a request goes on when its caller goes away (a deadline, a client that hung up), and
    its key is freed only when it fails before its record is made, so a retry answers with the
    record the first attempt may still make instead of making a second."""

    def __init__(self, keys: IdempotencyKeys, claim_lease_ms: int = 60_000, retry_after_seconds: int = 2) -> None:
        self._keys = keys
        self._claim_lease_ms = claim_lease_ms
        self._retry_after = retry_after_seconds
        # Requests whose callers may have gone away; close() gives them time to finish.
        self._in_flight: set[asyncio.Task[Any]] = set()

    async def run(
        self,
        owner: str,
        key: str,
        fingerprint: str,
        new_record_id: str,
        *,
        earlier: Callable[[str], Awaitable[Made | None]],
        make: Callable[[str], Awaitable[Made]],
    ) -> tuple[Made, bool]:
        """The record `make` makes under the claimed record id, or the one `earlier` finds for a
        repeated key; and whether it is the earlier one."""
        subject = self._keys.subject
        try:
            claim = await self._keys.claim(owner, key, fingerprint, new_record_id)
            if claim.replayed:
                found = await earlier(claim.record_id)
                if found is not None:
                    return found, True
                taken_over = await self._keys.take_over(owner, key, claim, self._claim_lease_ms)
                if taken_over is None:
                    raise self._keys.in_use()
                log.warning("idempotency_claim_taken_over", subject=subject, record_id=claim.record_id, owner=owner)
                claim = taken_over
        except PyMongoError as error:
            log.error("idempotency_claim_failed", subject=subject, owner=owner, exc_info=True)
            raise Unavailable(
                f"the {subject} could not be registered; try again shortly",
                reason="database-unavailable",
                retry_after=self._retry_after,
            ) from error
        task = asyncio.ensure_future(self._make_claimed(owner, key, claim, make))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        # The caller's cancel (a deadline, a client that hung up) stops the wait, not the request.
        return await asyncio.shield(task), False

    async def _make_claimed(self, owner: str, key: str, claim: Claim, make: Callable[[str], Awaitable[Made]]) -> Made:
        try:
            return await make(claim.record_id)
        except Conflict:
            raise  # another attempt under this key made the record: the key is its
        except Exception:
            # Refused, or failed before its record was made. (Cancellation, at shutdown, frees
            # nothing: its record may exist, and a claim without one is taken over after the lease.)
            try:
                await self._keys.release(owner, key, claim)
            except PyMongoError:
                log.warning(
                    "idempotency_release_failed", subject=self._keys.subject, record_id=claim.record_id, exc_info=True
                )
            raise

    async def close(self, timeout_seconds: float = 10.0) -> None:
        """Give requests whose callers went away a bounded time to finish before the connections close."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout_seconds)
