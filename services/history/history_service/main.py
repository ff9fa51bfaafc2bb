"""Wiring and start-up of the history service: gRPC API and event consumer in one process."""

from __future__ import annotations

from facerestore.history.v1 import history_pb2_grpc
from facerestore_common import mongo
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus, ProcessedEvents
from facerestore_common.grpc_client import remote_token_verifier
from facerestore_common.grpc_server import AuthInterceptor, GrpcServer
from facerestore_common.storage import BlobStore
from facerestore_common.topology import CONSUMER_BINDINGS
from history_service.consumer import HistoryProjector
from history_service.downloads import DownloadTokens
from history_service.faces import FaceRepository
from history_service.grpc_api import ACCESS_POLICY, HistoryApi
from history_service.history import History
from history_service.items import ItemRepository
from history_service.settings import Settings


async def serve(settings: Settings) -> None:
    database = mongo.connect(settings.mongo_url, settings.mongo_database)
    items = ItemRepository(database)
    await items.create_indexes()
    blobs = BlobStore(settings)
    await blobs.ensure_bucket()
    bus = EventBus(
        settings.amqp_url.get_secret_value(),
        settings.events_exchange,
        settings.queue_prefix,
        "history",
        topology=CONSUMER_BINDINGS,
    )
    await bus.connect()
    faces = FaceRepository(database)
    await faces.create_indexes()
    history = History(
        items,
        blobs,
        bus,
        DownloadTokens(settings.download_token_secret.get_secret_value(), settings.download_token_ttl_seconds),
        faces=faces,
    )
    await bus.consume(
        "history",
        CONSUMER_BINDINGS["history"],
        HistoryProjector(history),
        ProcessedEvents(database["processed_events"], "history"),
        settings.consumer_prefetch,
    )
    verifier, auth_channel = remote_token_verifier(settings)
    server = GrpcServer(
        ["facerestore.history.v1.HistoryService"],
        settings.grpc_host,
        settings.grpc_port,
        settings.grpc_max_message_bytes,
        [AuthInterceptor(verifier, ACCESS_POLICY)],
    )
    history_pb2_grpc.add_HistoryServiceServicer_to_server(HistoryApi(history), server.server)

    async def close() -> None:
        await bus.close()
        await auth_channel.close()
        database.client.close()

    await server.run(on_stop=close)


def run() -> None:
    run_service(Settings(), serve)


if __name__ == "__main__":
    run()
