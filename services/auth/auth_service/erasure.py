"""Erasing an account (DELETE /v1/me): auth's own part at once, everyone else's through
`user.deleted`.

At once, in this order, each step idempotent: an erasure record is written (it holds the user
id until the event is out); every session of the user ends (its access tokens are refused from
the next request on, through the revocation list the gateway reads); refresh tokens, the user,
their email claim, role changes and activity not yet relayed are deleted, so the phone number
and the email address are free again (signing in with them creates a new, empty account).
Then `user.deleted` is published with the event id kept in the record, and the record drops the
user id, keeping only its pseudonym (HMAC under PSEUDONYM_SECRET).

If the process dies, or the broker does not take the event, the record stays `pending` and
`AccountErasure.run_forever` completes it: the steps again, then the event, with the same event
id, so consumers that already had it do not act twice. Every consumer (history, upload, admin)
acks `user.deleted` only after its own part is done, so the broker tracks the rest to
completion."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

from auth_service.sessions import SessionStore
from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventBus, new_envelope
from facerestore_common.logging import get_logger
from facerestore_common.pseudonym import pseudonym
from facerestore_common.timeutil import now_ms

log = get_logger(__name__)


class AccountErasure:
    def __init__(
        self,
        database: AsyncIOMotorDatabase,
        sessions: SessionStore,
        bus: EventBus,
        secret: str,
        publish_timeout_seconds: float = 5.0,
    ) -> None:
        self._erasures = database["erasures"]
        self._users = database["users"]
        self._emails = database["user_emails"]
        self._role_changes = database["role_changes"]
        self._refresh_tokens = database["refresh_tokens"]
        self._activity_outbox = database["activity_outbox"]
        self._sessions = sessions
        self._bus = bus
        self._secret = secret
        self._publish_timeout = publish_timeout_seconds

    async def create_indexes(self) -> None:
        await self._erasures.create_index([("state", 1), ("requested_at_ms", 1)])

    async def erase(self, user_id: str) -> str:
        """Close the account now and ask every service to erase the user; returns the erasure id."""
        doc = await self._erasures.find_one({"user_id": user_id, "state": "pending"})
        if doc is None:
            doc = {
                "_id": uuid.uuid4().hex,
                "user_id": user_id,
                "pseudonym": pseudonym(self._secret, user_id),
                "event_id": uuid.uuid4().hex,
                "state": "pending",
                "requested_at_ms": now_ms(),
            }
            await self._erasures.insert_one(doc)
        await self._complete(doc)
        return str(doc["_id"])

    async def _complete(self, doc: dict[str, Any]) -> None:
        user_id = str(doc["user_id"])
        await self._close_account(user_id)
        try:
            await asyncio.wait_for(self._publish(doc), self._publish_timeout)
        except Exception as error:
            # The account is closed; the event follows when the broker takes it (run_forever).
            log.warning("erasure_event_deferred", erasure_id=doc["_id"], error=repr(error))
            return
        await self._erasures.update_one(
            {"_id": doc["_id"]},
            {"$set": {"state": "published", "published_at_ms": now_ms()}, "$unset": {"user_id": ""}},
        )
        log.info("account_erased", erasure_id=doc["_id"], user=doc["pseudonym"])

    async def _close_account(self, user_id: str) -> None:
        # Every session, ended ones too: their access tokens may still be inside their lifetime.
        for session_id in await self._refresh_tokens.distinct("session_id", {"user_id": user_id}):
            await self._sessions.revoke(session_id)
        await self._refresh_tokens.delete_many({"user_id": user_id})
        await self._activity_outbox.delete_many({"user_id": user_id})
        await self._role_changes.delete_many({"user_id": user_id})
        await self._emails.delete_many({"user_id": user_id})
        await self._users.delete_one({"_id": user_id})

    async def _publish(self, doc: dict[str, Any]) -> None:
        envelope = new_envelope("auth", user_deleted=events_pb2.UserDeleted(user_id=str(doc["user_id"])))
        envelope.event_id = str(doc["event_id"])
        await self._bus.publish(envelope)

    async def resume_pending(self, older_than_ms: int = 0) -> int:
        """Complete erasures a crash or a broker outage left pending; returns how many were tried."""
        docs = await self._erasures.find(
            {"state": "pending", "requested_at_ms": {"$lte": now_ms() - older_than_ms}}
        ).to_list(100)
        for doc in docs:
            await self._complete(doc)
        return len(docs)

    async def run_forever(self, interval_seconds: float) -> None:
        while True:
            try:
                # Leaves alone, for one interval, what a request is completing right now.
                await self.resume_pending(older_than_ms=int(interval_seconds * 1000))
            except Exception:
                log.error("erasure_resume_failed", exc_info=True)
            await asyncio.sleep(interval_seconds)
