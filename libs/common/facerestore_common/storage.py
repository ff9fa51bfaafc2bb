"""Blob storage through the minio SDK (MinIO, S3, or any S3-protocol server)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import BinaryIO, cast

from minio import Minio
from minio.error import S3Error, ServerError
from urllib3 import BaseHTTPResponse
from urllib3.exceptions import HTTPError

from facerestore_common.settings import StorageSettings
from facerestore_common.startup_wait import StartupDeadline, wait_for_dependency


class BlobNotFound(Exception):
    pass


# S3 allows 10,000 parts of at least 5 MiB (but the last) per multipart upload.
MIN_PART_SIZE = 5 * 1024 * 1024


class _ChunkReader:
    """A file-like view of an iterator of byte chunks, for an upload of unknown length: read(n)
    answers n bytes (fewer only at the end), keeping at most n bytes plus one chunk in memory."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = bytearray()
        self._exhausted = False
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        while not self._exhausted and (size < 0 or len(self._buffer) < size):
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                self._exhausted = True
        count = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self.total += count
        return data


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
        self._endpoint = settings.s3_endpoint
        self._keys = (settings.s3_access_key.get_secret_value(), settings.s3_secret_key.get_secret_value())

    async def ensure_bucket(self, deadline: StartupDeadline | None = None) -> None:
        """Create the bucket unless it exists. With a start-up `deadline`: wait until then for a
        server that answers (each attempt is the SDK's own retries, a few seconds while refused)."""

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

        async def attempt() -> None:
            await asyncio.to_thread(ensure)

        if deadline is None:
            await attempt()
            return
        await wait_for_dependency(
            attempt,
            dependency="storage",
            address=self._endpoint,
            # Not S3Error: the server answered, and no wait mends wrong keys or a bucket of someone else's.
            retry_on=(HTTPError, ServerError, OSError),
            deadline=deadline,
            secrets=self._keys,
        )

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

    async def put_stream(
        self, key: str, chunks: Iterable[bytes], content_type: str, part_size: int = 8 * 1024 * 1024
    ) -> int:
        """Store what `chunks` yields, of unknown total length, as an S3 multipart upload: one part
        in memory at a time. `chunks` is iterated in a worker thread (it may block). If it raises,
        the multipart upload is aborted and nothing is stored. Returns the bytes stored."""
        reader = _ChunkReader(chunks)
        await asyncio.to_thread(
            self._client.put_object,
            self.bucket,
            key,
            cast(BinaryIO, reader),
            -1,
            content_type=content_type,
            part_size=max(part_size, MIN_PART_SIZE),
        )
        return reader.total

    async def stream(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The object's bytes in chunks, never all in memory; BlobNotFound if there is none."""

        def open_object() -> BaseHTTPResponse:
            try:
                return self._client.get_object(self.bucket, key)
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject"):
                    raise BlobNotFound(key) from error
                raise

        response = await asyncio.to_thread(open_object)
        try:
            while chunk := await asyncio.to_thread(response.read, chunk_size):
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def size(self, key: str) -> int:
        def stat() -> int:
            try:
                return int(self._client.stat_object(self.bucket, key).size or 0)
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    raise BlobNotFound(key) from error
                raise

        return await asyncio.to_thread(stat)

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
