from __future__ import annotations

from pydantic import Field, SecretStr

from facerestore_common.settings import (
    AuthClientSettings,
    BrokerSettings,
    GrpcServerSettings,
    MongoSettings,
    ServiceSettings,
    StorageSettings,
)


class Settings(ServiceSettings, GrpcServerSettings, AuthClientSettings, MongoSettings, BrokerSettings, StorageSettings):
    service_name: str = "history"
    grpc_port: int = 50053
    mongo_database: str = "facerestore_history"

    # Signs the short-lived download tokens that image URLs carry.
    download_token_secret: SecretStr = SecretStr("dev-only-download-token-secret")
    download_token_ttl_seconds: int = Field(default=900, ge=30)
