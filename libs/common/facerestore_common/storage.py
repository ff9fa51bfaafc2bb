"""Blob storage through the minio SDK (MinIO, S3, or any S3-protocol server)."""

from __future__ import annotations

import asyncio
import io

from minio import Minio
from minio.error import S3Error

from facerestore_common.settings import StorageSettings


class BlobNotFound(Exception):
    pass


class BlobStore:
    def __init__(self, settings: StorageSettings) -> None:
        # The region is given so the SDK never asks the server for it (a request
        # that minimal S3 servers do not implement).
        self._client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        self.bucket = settings.s3_bucket

    async def ensure_bucket(self) -> None:
        def ensure() -> None:
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as error:
                # Services start together and race to create the bucket; losing
                # to one of our own is success. A bucket someone else owns is not.
                if error.code != "BucketAlreadyOwnedByYou":
                    raise

        await asyncio.to_thread(ensure)

    async def ping(self) -> bool:
        try:
            return await asyncio.to_thread(self._client.bucket_exists, self.bucket)
        except Exception:
            return False

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(
            self._client.put_object, self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
        )

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            try:
                response = self._client.get_object(self.bucket, key)
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject"):
                    raise BlobNotFound(key) from error
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await asyncio.to_thread(read)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.remove_object, self.bucket, key)

    async def exists(self, key: str) -> bool:
        def stat() -> bool:
            try:
                self._client.stat_object(self.bucket, key)
                return True
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return False
                raise

        return await asyncio.to_thread(stat)
