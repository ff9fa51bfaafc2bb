"""Wiring and start-up of the history service: gRPC API and event consumer in one process."""

from __future__ import annotations

import asyncio
import functools

from redis.asyncio import Redis

from facerestore.history.v1 import history_pb2_grpc
from facerestore_common import mongo
from facerestore_common.activity import ActivityOutbox, stop_task
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus, ProcessedEvents
from facerestore_common.grpc_client import remote_token_verifier
from facerestore_common.grpc_server import AuthInterceptor, GrpcServer
from facerestore_common.images import ImageLimits
from facerestore_common.library_generation import LibraryGenerations
from facerestore_common.metrics_server import serve_metrics
from facerestore_common.redis_connect import ping_when_available
from facerestore_common.startup_wait import StartupDeadline
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS
from history_service.consumer import HistoryProjector
from history_service.downloads import DownloadTokens
from history_service.embedding_client import EmbeddingClient
from history_service.face_index import open_face_index
from history_service.faces import FaceRepository
from history_service.grpc_api import ACCESS_POLICY, HistoryApi
from history_service.history import History
from history_service.items import ItemRepository
from history_service.library_setup import LibraryServices
from history_service.moderation import Moderation
from history_service.search import FaceSearch
from history_service.settings import Settings
from history_service.tracked_items import tracked_items


async def serve(settings: Settings) -> None:
    deadline = StartupDeadline(settings.startup_wait_seconds)
    database = await mongo.connect_when_available(settings.mongo_url, settings.mongo_database, deadline)
    # A Redis that hangs must not hold the writes: each raise of a generation has a deadline.
    redis = Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    await ping_when_available(redis, deadline)
    items = ItemRepository(tracked_items(database, LibraryGenerations(redis, settings.redis_key_prefix)))
    await items.create_indexes()
    blobs = BlobStore(settings)
    await blobs.ensure_bucket(deadline)
    bus = EventBus(
        settings.amqp_url.get_secret_value(),
        settings.events_exchange,
        settings.queue_prefix,
        "history",
        topology=CONSUMER_BINDINGS,
        startup_deadline=deadline,
    )
    await bus.connect()
    faces = FaceRepository(database)
    await faces.create_indexes()
    face_index = await open_face_index(settings, deadline=deadline)
    embedder = EmbeddingClient(
        settings.amqp_url.get_secret_value(), settings.queue_prefix, settings.embed_timeout_seconds
    )
    await embedder.connect()
    history = History(
        items,
        blobs,
        bus,
        DownloadTokens(settings.download_token_secret.get_secret_value(), settings.download_token_ttl_seconds),
        faces=faces,
        face_index=face_index,
    )
    # Searches made, for the admins' statistics: recorded in MongoDB, relayed to the broker.
    activity = ActivityOutbox(database, "history")
    await activity.create_indexes()
    relay = asyncio.create_task(activity.run(bus))
    # Edits, filters, feedback, delete-all, exports and erasure (library_setup.py).
    library = await LibraryServices.create(settings, database, history, blobs, bus)
    await bus.consume(
        "history",
        CONSUMER_BINDINGS["history"],
        HistoryProjector(history, eraser=library.eraser),
        ProcessedEvents(database["processed_events"], "history"),
        settings.consumer_prefetch,
    )
    verifier, auth_channel = remote_token_verifier(settings)
    server = GrpcServer.from_settings(
        settings,
        ["facerestore.history.v1.HistoryService"],
        [AuthInterceptor(verifier, ACCESS_POLICY)],
        checks={"mongodb": functools.partial(mongo.ping, database), "broker": bus.ping},
    )
    metrics = serve_metrics(settings)
    search = FaceSearch(items, faces, face_index, embedder, ImageLimits.from_settings(settings))
    api = HistoryApi(
        history,
        search,
        moderation=Moderation(history, bus),
        activity=activity,
        library=library.library,
        exports=library.exports,
    )
    history_pb2_grpc.add_HistoryServiceServicer_to_server(api, server.server)
    library.start()

    async def close() -> None:
        if metrics is not None:
            metrics.close()
        await stop_task(relay)
        await library.stop()
        await bus.close()
        await embedder.close()
        await face_index.close()
        await auth_channel.close()
        await redis.aclose()
        database.client.close()

    await server.run(on_stop=close)


def run() -> None:
    run_service(Settings(), serve)


if __name__ == "__main__":
    run()
