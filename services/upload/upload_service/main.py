"""Wiring and start-up of the upload service."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from facerestore.upload.v1 import upload_pb2_grpc
from facerestore_common import mongo
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus, ProcessedEvents
from facerestore_common.grpc_client import remote_token_verifier
from facerestore_common.grpc_server import AuthInterceptor, GrpcServer
from facerestore_common.images import ImageLimits
from facerestore_common.metrics_server import serve_metrics
from facerestore_common.startup_wait import StartupDeadline
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS
from upload_service.erasure import UploadErasure
from upload_service.grpc_api import ACCESS_POLICY, UploadApi
from upload_service.idempotency import IdempotencyKeys
from upload_service.jobs import JobRepository
from upload_service.key_purge import purge_expired_keys_forever
from upload_service.outbox import OutboxRelay
from upload_service.restorations import RestorationRequestRepository, Restorations
from upload_service.settings import Settings
from upload_service.uploads import Uploads


async def serve(settings: Settings) -> None:
    deadline = StartupDeadline(settings.startup_wait_seconds)
    database = await mongo.connect_when_available(settings.mongo_url, settings.mongo_database, deadline)
    jobs = JobRepository(database)
    await jobs.create_indexes()
    blobs = BlobStore(settings)
    await blobs.ensure_bucket(deadline)
    bus = EventBus(
        settings.amqp_url.get_secret_value(),
        settings.events_exchange,
        settings.queue_prefix,
        "upload",
        topology=CONSUMER_BINDINGS,
        startup_deadline=deadline,
    )
    await bus.connect()
    verifier, auth_channel = remote_token_verifier(settings)
    limits = ImageLimits.from_settings(settings)
    server = GrpcServer.from_settings(
        settings,
        ["facerestore.upload.v1.UploadService"],
        [AuthInterceptor(verifier, ACCESS_POLICY)],
        # Not the broker: while it is down the outbox keeps accepted uploads and relays them later,
        # so an outage must not take upload pods out of the Service.
        checks={"mongodb": functools.partial(mongo.ping, database), "storage": blobs.ping},
    )
    metrics = serve_metrics(settings)
    idempotency = IdempotencyKeys(database)
    restoration_keys = IdempotencyKeys.for_restorations(database)
    for keys in (idempotency, restoration_keys):
        await keys.create_indexes()
    uploads = Uploads(
        blobs,
        jobs,
        bus,
        limits,
        idempotency=idempotency,
        publish_timeout_seconds=settings.publish_timeout_seconds,
        relay_grace_ms=int(settings.outbox_grace_seconds * 1000),
        claim_lease_ms=int(settings.idempotency_claim_lease_seconds * 1000),
        retry_after_seconds=settings.unavailable_retry_after_seconds,
    )
    restoration_requests = RestorationRequestRepository(database)
    await restoration_requests.create_indexes()
    restorations = Restorations(
        jobs,
        restoration_requests,
        bus,
        publish_timeout_seconds=settings.publish_timeout_seconds,
        relay_grace_ms=int(settings.outbox_grace_seconds * 1000),
        idempotency=restoration_keys,
        claim_lease_ms=int(settings.idempotency_claim_lease_seconds * 1000),
        retry_after_seconds=settings.unavailable_retry_after_seconds,
    )
    upload_pb2_grpc.add_UploadServiceServicer_to_server(UploadApi(uploads, restorations), server.server)
    relay = OutboxRelay(
        jobs,
        uploads,
        settings.outbox_relay_interval_seconds,
        int(settings.outbox_retry_seconds * 1000),
        restorations=restorations,
    )
    relay_task = asyncio.create_task(relay.run_forever())
    purge_task = asyncio.create_task(
        purge_expired_keys_forever((idempotency, restoration_keys), settings.idempotency_purge_interval_seconds)
    )
    # An erased account's job records and originals (user.deleted).
    await bus.consume(
        "upload",
        CONSUMER_BINDINGS["upload"],
        UploadErasure(database, blobs),
        ProcessedEvents(database["processed_events"], "upload"),
        prefetch=1,
    )

    async def close() -> None:
        if metrics is not None:
            metrics.close()
        for task in (relay_task, purge_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await uploads.close()
        await restorations.close()
        await bus.close()
        await auth_channel.close()
        database.client.close()

    await server.run(on_stop=close)


def run() -> None:
    run_service(Settings(), serve)


if __name__ == "__main__":
    run()
