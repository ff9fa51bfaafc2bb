"""Admin's part of erasing an account (`user.deleted`): the audit log keeps what admins did,
but the erased user is named in it only by their pseudonym (HMAC of the id under
PSEUDONYM_SECRET, the one auth and history use too), wherever the id stood: as the actor, the
target, or the owner of an image or user acted on. Idempotent."""

from __future__ import annotations

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore.events.v1 import events_pb2
from facerestore_common.events import EventHandler
from facerestore_common.logging import get_logger
from facerestore_common.pseudonym import pseudonym

log = get_logger(__name__)

# Where an audit entry (audit.py) may hold a user id.
USER_ID_FIELDS = ("actor_id", "target", "details.owner_id", "details.user_id")


class AuditErasure:
    def __init__(self, database: AsyncIOMotorDatabase, secret: str) -> None:
        self._entries = database["audit_log"]
        self._secret = secret

    async def pseudonymise(self, user_id: str) -> int:
        if not user_id:
            return 0
        replacement = pseudonym(self._secret, user_id)
        changed = 0
        for field in USER_ID_FIELDS:
            result = await self._entries.update_many({field: user_id}, {"$set": {field: replacement}})
            changed += int(result.modified_count)
        log.info("audit_pseudonymised", user=replacement, fields_changed=changed)
        return changed


class ErasingHandler:
    """Runs the audit log's part of `user.deleted` before the wrapped handler's."""

    def __init__(self, handler: EventHandler, audit: AuditErasure) -> None:
        self._handler = handler
        self._audit = audit

    async def __call__(self, envelope: events_pb2.Envelope) -> None:
        if envelope.WhichOneof("payload") == "user_deleted":
            await self._audit.pseudonymise(envelope.user_deleted.user_id)
        await self._handler(envelope)
