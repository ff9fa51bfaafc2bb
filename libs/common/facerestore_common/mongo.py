"""MongoDB connection through motor."""

from __future__ import annotations

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase


def connect(url: str, database: str) -> AsyncIOMotorDatabase:
    client: AsyncIOMotorClient = AsyncIOMotorClient(url, tz_aware=True, serverSelectionTimeoutMS=5000)
    return client[database]


async def ping(database: AsyncIOMotorDatabase) -> bool:
    try:
        await database.command("ping")
        return True
    except Exception:
        return False
