"""BlobStore against the S3 stand-in: a real S3-protocol server on a free port."""

from __future__ import annotations

import os

import pytest

from facerestore_common.settings import StorageSettings
from facerestore_common.storage import BlobNotFound, BlobStore


@pytest.fixture
async def store(s3_endpoint: str, unique_name: str) -> BlobStore:
    blobs = BlobStore(StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=unique_name))
    await blobs.ensure_bucket()
    return blobs


async def test_ensure_bucket_creates_the_bucket_and_can_run_again(s3_endpoint: str, unique_name: str) -> None:
    blobs = BlobStore(StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=unique_name))
    assert not await blobs.ping()

    await blobs.ensure_bucket()
    await blobs.ensure_bucket()

    assert await blobs.ping()


async def test_ensure_bucket_tolerates_losing_the_creation_race(
    s3_endpoint: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = StorageSettings(s3_endpoint=s3_endpoint, s3_bucket=unique_name)
    first, second = BlobStore(settings), BlobStore(settings)
    # The second service checked before the first created the bucket.
    monkeypatch.setattr(second._client, "bucket_exists", lambda bucket: False)

    await first.ensure_bucket()
    await second.ensure_bucket()

    assert await first.ping()


async def test_put_then_get_returns_the_same_bytes(store: BlobStore) -> None:
    data = os.urandom(256 * 1024) + b"\x00\xff end"

    await store.put("originals/u1/img-1.jpg", data, "image/jpeg")

    assert await store.get("originals/u1/img-1.jpg") == data


async def test_put_overwrites_an_existing_key(store: BlobStore) -> None:
    await store.put("thumbs/img-1.jpg", b"first", "image/jpeg")
    await store.put("thumbs/img-1.jpg", b"second", "image/jpeg")

    assert await store.get("thumbs/img-1.jpg") == b"second"


async def test_exists_tells_stored_keys_from_missing_ones(store: BlobStore) -> None:
    await store.put("originals/u1/img-1.png", b"png bytes", "image/png")

    assert await store.exists("originals/u1/img-1.png")
    assert not await store.exists("originals/u1/img-2.png")


async def test_deleted_blob_is_gone(store: BlobStore) -> None:
    await store.put("originals/u1/img-1.jpg", b"jpeg bytes", "image/jpeg")

    await store.delete("originals/u1/img-1.jpg")

    assert not await store.exists("originals/u1/img-1.jpg")
    with pytest.raises(BlobNotFound):
        await store.get("originals/u1/img-1.jpg")


async def test_get_of_a_missing_key_raises_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound) as caught:
        await store.get("originals/nobody/never-uploaded.jpg")

    assert caught.value.args == ("originals/nobody/never-uploaded.jpg",)


async def test_delete_of_a_missing_key_does_not_raise(store: BlobStore) -> None:
    await store.delete("originals/nobody/never-uploaded.jpg")

    assert not await store.exists("originals/nobody/never-uploaded.jpg")


async def test_delete_leaves_other_keys_alone(store: BlobStore) -> None:
    await store.put("restored/img-1.jpg", b"keep me", "image/jpeg")
    await store.put("restored/img-2.jpg", b"delete me", "image/jpeg")

    await store.delete("restored/img-2.jpg")

    assert await store.get("restored/img-1.jpg") == b"keep me"
