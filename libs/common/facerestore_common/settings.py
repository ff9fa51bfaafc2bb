"""Typed settings pieces that services compose into their own Settings class.

Every value has a default that works for the local run; production mode
(`ENVIRONMENT=production`) refuses to start with the development secrets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_PREFIX = "dev-only-"  # noqa: S105 - a marker, not a secret


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    environment: Literal["development", "production"] = "development"
    log_level: str = "INFO"
    service_name: str = "facerestore"

    @model_validator(mode="after")
    def _no_dev_secrets_in_production(self) -> ServiceSettings:
        if self.environment != "production":
            return self
        for name, value in self:
            if isinstance(value, SecretStr) and value.get_secret_value().startswith(DEV_SECRET_PREFIX):
                raise ValueError(f"{name.upper()} must be set to a real secret when ENVIRONMENT=production")
        return self


class GrpcServerSettings(BaseSettings):
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    grpc_max_message_bytes: int = 8 * 1024 * 1024


class AuthClientSettings(BaseSettings):
    """Where to fetch the signing keys that tokens are verified with."""

    auth_grpc_target: str = "127.0.0.1:50051"
    jwt_issuer: str = "facerestore-auth"
    jwt_audience: str = "facerestore"
    jwks_cache_seconds: int = 300
    jwt_leeway_seconds: int = 10


class MongoSettings(BaseSettings):
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_database: str = "facerestore"


class BrokerSettings(BaseSettings):
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    events_exchange: str = "facerestore.events"
    # Prefixes queue names so that several stacks can share one broker (tests do).
    queue_prefix: str = "facerestore"
    consumer_prefetch: int = Field(default=4, ge=1)


class StorageSettings(BaseSettings):
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: SecretStr = SecretStr("dev-only-access-key")
    s3_secret_key: SecretStr = SecretStr("dev-only-secret-key")
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_bucket: str = "facerestore-images"


class RedisSettings(BaseSettings):
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Starts every key this platform writes, so that several deployments (or test stacks)
    # can share one Redis.
    redis_key_prefix: str = "facerestore"
