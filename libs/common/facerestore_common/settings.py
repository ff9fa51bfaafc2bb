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
    # Prometheus /metrics (and, where a service has them, its HTTP probes) on a port of its
    # own, never on the public API. Each service has its own default so that all fit on one
    # machine; 0 turns the endpoint off. Containers set METRICS_HOST=0.0.0.0.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    # How long start-up waits, in all, for the servers it cannot start without (MongoDB, Redis,
    # S3, the broker; retrying with back-off) before it gives up and exits; 0: one attempt each.
    startup_wait_seconds: float = Field(default=60.0, ge=0)

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
    # Connections are closed after this long (calls in progress get the grace period), so that
    # clients balancing over a headless Service re-resolve its name and find new pods.
    grpc_max_connection_age_seconds: float = Field(default=300.0, gt=0)
    grpc_max_connection_age_grace_seconds: float = Field(default=30.0, ge=0)
    # How often the gRPC health status is brought up to date with the service's dependencies
    # (MongoDB, Redis, the broker): NOT_SERVING while one of them does not answer.
    dependency_check_interval_seconds: float = Field(default=5.0, gt=0)
    dependency_check_timeout_seconds: float = Field(default=2.0, gt=0)


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


class ImageLimitSettings(BaseSettings):
    """The upload rules for a photo: uploads and the query photos of a similar-face search."""

    max_upload_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=4096)
    max_image_side: int = Field(default=12_000, ge=64)
    min_image_side: int = Field(default=64, ge=1)
    jpeg_quality: int = Field(default=92, ge=50, le=100)


class PseudonymSettings(BaseSettings):
    """The key of the pseudonyms that replace an erased user's id (facerestore_common.pseudonym);
    every service that keeps them must share it."""

    pseudonym_secret: SecretStr = SecretStr("dev-only-pseudonym-secret")
