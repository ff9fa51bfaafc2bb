from __future__ import annotations

from pydantic import Field

from facerestore_common.settings import (
    AuthClientSettings,
    BrokerSettings,
    GrpcServerSettings,
    MongoSettings,
    PseudonymSettings,
    ServiceSettings,
)


class Settings(
    ServiceSettings, GrpcServerSettings, AuthClientSettings, MongoSettings, BrokerSettings, PseudonymSettings
):
    service_name: str = "admin"
    grpc_port: int = 50054
    metrics_port: int = 9105
    mongo_database: str = "facerestore_admin"
    history_grpc_target: str = "127.0.0.1:50053"
    downstream_timeout_seconds: float = Field(default=5.0, gt=0)
