"""Wiring and start-up of the upload service."""

from __future__ import annotations

import asyncio
import contextlib

from facerestore.upload.v1 import upload_pb2_grpc
from facerestore_common import mongo
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus
from facerestore_common.grpc_client import remote_token_verifier
from facerestore_common.grpc_server import AuthInterceptor, GrpcServer
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS
from upload_service.grpc_api import ACCESS_POLICY, UploadApi
from upload_service.idempotency import IdempotencyKeys
from upload_service.jobs import JobRepository
from upload_service.outbox import OutboxRelay
from upload_service.settings import Settings
from upload_service.uploads import Uploads
from upload_service.validation import ImageLimits


async def serve(settings: Settings) -> None:
    database = mongo.connect(settings.mongo_url, settings.mongo_database)
    jobs = JobRepository(database)
    await jobs.create_indexes()
    blobs = BlobStore(settings)
    await blobs.ensure_bucket()
    bus = EventBus(
        settings.amqp_url.get_secret_value(),
        settings.events_exchange,
        settings.queue_prefix,
        "upload",
        topology=CONSUMER_BINDINGS,
    )
    await bus.connect()
    verifier, auth_channel = remote_token_verifier(settings)
    limits = ImageLimits(
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        max_side=settings.max_image_side,
        min_side=settings.min_image_side,
        jpeg_quality=settings.jpeg_quality,
    )
    server = GrpcServer(
        ["facerestore.upload.v1.UploadService"],
        settings.grpc_host,
        settings.grpc_port,
        settings.grpc_max_message_bytes,
        [AuthInterceptor(verifier, ACCESS_POLICY)],
    )
    idempotency = IdempotencyKeys(database)
    uploads = Uploads(
        blobs,
        jobs,
        bus,
        limits,
        idempotency=idempotency,
        publish_timeout_seconds=settings.publish_timeout_seconds,
        relay_grace_ms=int(settings.outbox_grace_seconds * 1000),
    )
    upload_pb2_grpc.add_UploadServiceServicer_to_server(UploadApi(uploads), server.server)
    relay = OutboxRelay(
        jobs, uploads, settings.outbox_relay_interval_seconds, int(settings.outbox_retry_seconds * 1000)
    )
    relay_task = asyncio.create_task(relay.run_forever())

    async def close() -> None:
        relay_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay_task
        await bus.close()
        await auth_channel.close()
        database.client.close()

    await server.run(on_stop=close)


def run() -> None:
    run_service(Settings(), serve)


if __name__ == "__main__":
    run()
