"""Per-test connections for the auth tests: real Redis with a key prefix of the test's own,
and a Mongo database of the test's own on the stand-in; both are emptied afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common import mongo


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    await db.client.drop_database(unique_name)
    db.client.close()
