"""Wiring and start-up of the admin service."""

from __future__ import annotations

from admin_service.audit import AuditLog
from admin_service.grpc_api import ACCESS_POLICY, AdminApi
from admin_service.settings import Settings
from facerestore.admin.v1 import admin_pb2_grpc
from facerestore.auth.v1 import auth_pb2_grpc
from facerestore.history.v1 import history_pb2_grpc
from facerestore_common import mongo
from facerestore_common.bootstrap import run_service
from facerestore_common.grpc_client import insecure_channel, remote_token_verifier
from facerestore_common.grpc_server import AuthInterceptor, GrpcServer


async def serve(settings: Settings) -> None:
    database = mongo.connect(settings.mongo_url, settings.mongo_database)
    audit = AuditLog(database)
    await audit.create_indexes()
    verifier, auth_channel = remote_token_verifier(settings)
    history_channel = insecure_channel(settings.history_grpc_target)
    server = GrpcServer(
        ["facerestore.admin.v1.AdminService"],
        settings.grpc_host,
        settings.grpc_port,
        settings.grpc_max_message_bytes,
        [AuthInterceptor(verifier, ACCESS_POLICY)],
    )
    api = AdminApi(
        auth_pb2_grpc.AuthServiceStub(auth_channel),
        history_pb2_grpc.HistoryServiceStub(history_channel),
        audit,
        settings.downstream_timeout_seconds,
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(api, server.server)

    async def close() -> None:
        await auth_channel.close()
        await history_channel.close()
        database.client.close()

    await server.run(on_stop=close)


def run() -> None:
    run_service(Settings(), serve)


if __name__ == "__main__":
    run()
