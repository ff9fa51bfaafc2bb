"""What the upload service's tests share: the real MongoDB stand-in, S3 stand-in and a test photo."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from facerestore_common import mongo
from facerestore_common.settings import StorageSettings
from facerestore_common.storage import BlobStore
from upload_service.jobs import JobRepository


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        pytest.fail("test photos missing: pip install --no-deps insightface==2.1")
    return (Path(spec.origin).parent / "data" / "images" / "t1.jpg").read_bytes()


@pytest.fixture
async def database(mongo_url: str, unique_name: str) -> AsyncIterator[AsyncIOMotorDatabase]:
    db = mongo.connect(mongo_url, unique_name)
    yield db
    await db.client.drop_database(unique_name)
    db.client.close()


@pytest.fixture
async def blobs(s3_endpoint: str, unique_name: str) -> BlobStore:
    store = BlobStore(StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=f"u-{unique_name}"))
    await store.ensure_bucket()
    return store


@pytest.fixture
async def jobs(database: AsyncIOMotorDatabase) -> JobRepository:
    repository = JobRepository(database)
    await repository.create_indexes()
    return repository
