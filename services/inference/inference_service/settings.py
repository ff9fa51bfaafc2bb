from __future__ import annotations

from typing import Literal

from pydantic import Field

from facerestore_common.settings import BrokerSettings, MongoSettings, ServiceSettings, StorageSettings


class Settings(ServiceSettings, BrokerSettings, StorageSettings, MongoSettings):
    service_name: str = "inference"
    # Only the record of handled event ids lives here.
    mongo_database: str = "facerestore_inference"
    restorer: Literal["classical"] = "classical"
    thumbnail_max_side: int = Field(default=256, ge=32)
    output_jpeg_quality: int = Field(default=92, ge=50, le=100)
    # Prometheus metrics on this port; 0 turns the endpoint off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, ge=0)
    shutdown_grace_seconds: float = Field(default=30.0, gt=0)
