"""Wiring and start-up of the admin service: its gRPC API, and the consumer of the platform's
events that keeps its statistics, users' activity and moderation queue."""

from __future__ import annotations

import functools

from admin_service.audit import AuditLog
from admin_service.erasure import AuditErasure, ErasingHandler
from admin_service.grpc_api import ACCESS_POLICY, AdminApi, ReadModels
from admin_service.moderation import ModerationQueue
from admin_service.projector import AdminProjector
from admin_service.queues import QueueInspector
from admin_service.results import ModelResults
from admin_service.settings import Settings
from admin_service.timeline import Timeline
from admin_service.usage import UsageLedger
from facerestore.admin.v1 import admin_pb2_grpc
from facerestore.auth.v1 import auth_pb2_grpc
from facerestore.history.v1 import history_pb2_grpc
from facerestore_common import mongo
from facerestore_common.bootstrap import run_service
from facerestore_common.events import EventBus, ProcessedEvents
from facerestore_common.grpc_client import insecure_channel, remote_token_verifier
from facerestore_common.grpc_server import AuthInterceptor, GrpcServer
from facerestore_common.metrics_server import serve_metrics
from facerestore_common.startup_wait import StartupDeadline
from facerestore_common.topology import CONSUMER_BINDINGS


async def serve(settings: Settings) -> None:
    deadline = StartupDeadline(settings.startup_wait_seconds)
    database = await mongo.connect_when_available(settings.mongo_url, settings.mongo_database, deadline)
    audit = AuditLog(database)
    models = ReadModels(
        usage=UsageLedger(database),
        results=ModelResults(database),
        timeline=Timeline(database),
        moderation=ModerationQueue(database),
        queues=QueueInspector(settings.amqp_url.get_secret_value(), settings.queue_prefix),
    )
    for repository in (audit, models.usage, models.results, models.timeline, models.moderation):
        await repository.create_indexes()
    bus = EventBus(
        settings.amqp_url.get_secret_value(),
        settings.events_exchange,
        settings.queue_prefix,
        "admin",
        topology=CONSUMER_BINDINGS,
        startup_deadline=deadline,
    )
    await bus.connect()
    await bus.consume(
        "admin",
        CONSUMER_BINDINGS["admin"],
        # An erased user's id in the audit log becomes their pseudonym (erasure.py).
        ErasingHandler(
            AdminProjector(models.usage, models.results, models.timeline, models.moderation),
            AuditErasure(database, settings.pseudonym_secret.get_secret_value()),
        ),
        ProcessedEvents(database["processed_events"], "admin"),
        settings.consumer_prefetch,
    )
    verifier, auth_channel = remote_token_verifier(settings)
    history_channel = insecure_channel(settings.history_grpc_target)
    server = GrpcServer.from_settings(
        settings,
        ["facerestore.admin.v1.AdminService"],
        [AuthInterceptor(verifier, ACCESS_POLICY)],
        # The broker too: without it the statistics stop following the platform.
        checks={"mongodb": functools.partial(mongo.ping, database), "broker": bus.ping},
    )
    metrics = serve_metrics(settings)
    api = AdminApi(
        auth_pb2_grpc.AuthServiceStub(auth_channel),
        history_pb2_grpc.HistoryServiceStub(history_channel),
        audit,
        settings.downstream_timeout_seconds,
        models,
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(api, server.server)

    async def close() -> None:
        if metrics is not None:
            metrics.close()
        await bus.close()
        await models.queues.close()
        await auth_channel.close()
        await history_channel.close()
        database.client.close()

    await server.run(on_stop=close)


def run() -> None:
    run_service(Settings(), serve)


if __name__ == "__main__":
    run()
