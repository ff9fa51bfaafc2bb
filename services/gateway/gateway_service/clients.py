"""The gateway's gRPC clients, one channel per service."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facerestore.admin.v1 import admin_pb2_grpc
from facerestore.auth.v1 import auth_pb2_grpc
from facerestore.history.v1 import history_pb2_grpc
from facerestore.upload.v1 import upload_pb2_grpc
from facerestore_common.grpc_client import insecure_channel
from gateway_service.settings import Settings


@dataclass
class ServiceClients:
    channels: dict[str, grpc.aio.Channel]
    auth: auth_pb2_grpc.AuthServiceStub
    upload: upload_pb2_grpc.UploadServiceStub
    history: history_pb2_grpc.HistoryServiceStub
    admin: admin_pb2_grpc.AdminServiceStub

    @classmethod
    def connect(cls, settings: Settings) -> ServiceClients:
        channels = {
            "auth": insecure_channel(settings.auth_grpc_target),
            "upload": insecure_channel(settings.upload_grpc_target),
            "history": insecure_channel(settings.history_grpc_target),
            "admin": insecure_channel(settings.admin_grpc_target),
        }
        return cls(
            channels=channels,
            auth=auth_pb2_grpc.AuthServiceStub(channels["auth"]),
            upload=upload_pb2_grpc.UploadServiceStub(channels["upload"]),
            history=history_pb2_grpc.HistoryServiceStub(channels["history"]),
            admin=admin_pb2_grpc.AdminServiceStub(channels["admin"]),
        )

    async def health(self, timeout_seconds: float = 1.0) -> dict[str, str]:
        """Each service's gRPC health status: "serving", "not-serving" or "unreachable", asked all at once."""

        async def status(channel: grpc.aio.Channel) -> str:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout_seconds
                )
            except grpc.aio.AioRpcError:
                return "unreachable"
            return "serving" if response.status == health_pb2.HealthCheckResponse.SERVING else "not-serving"

        names = list(self.channels)
        answers = await asyncio.gather(*(status(self.channels[name]) for name in names))
        return dict(zip(names, answers, strict=True))

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
