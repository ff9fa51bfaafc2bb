from __future__ import annotations

from pydantic import Field

from facerestore_common.settings import (
    AuthClientSettings,
    BrokerSettings,
    GrpcServerSettings,
    MongoSettings,
    ServiceSettings,
    StorageSettings,
)


class Settings(ServiceSettings, GrpcServerSettings, AuthClientSettings, MongoSettings, BrokerSettings, StorageSettings):
    service_name: str = "upload"
    grpc_port: int = 50052
    mongo_database: str = "facerestore_upload"

    max_upload_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=4096)
    max_image_side: int = Field(default=12_000, ge=64)
    min_image_side: int = Field(default=64, ge=1)
    jpeg_quality: int = Field(default=92, ge=50, le=100)
