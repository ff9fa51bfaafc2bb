"""The audit log: who did what to which object, and why."""

from __future__ import annotations

import uuid

from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common.timeutil import now_ms


class AuditLog:
    def __init__(self, database: AsyncIOMotorDatabase) -> None:
        self._entries = database["audit_log"]

    async def create_indexes(self) -> None:
        await self._entries.create_index("at_ms")

    async def record(self, actor_id: str, action: str, target: str, **details: str) -> None:
        await self._entries.insert_one(
            {
                "_id": uuid.uuid4().hex,
                "actor_id": actor_id,
                "action": action,
                "target": target,
                "details": details,
                "at_ms": now_ms(),
            }
        )

    async def count(self) -> int:
        return await self._entries.count_documents({})
