from __future__ import annotations

from pydantic import Field

from facerestore_common.settings import (
    AuthClientSettings,
    BrokerSettings,
    GrpcServerSettings,
    ImageLimitSettings,
    MongoSettings,
    ServiceSettings,
    StorageSettings,
)


class Settings(
    ServiceSettings,
    GrpcServerSettings,
    AuthClientSettings,
    MongoSettings,
    BrokerSettings,
    StorageSettings,
    ImageLimitSettings,
):
    service_name: str = "upload"
    grpc_port: int = 50052
    metrics_port: int = 9103
    mongo_database: str = "facerestore_upload"

    # How long an upload waits for the broker before leaving its event to the outbox relay.
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    # The relay: how often it looks for unpublished events, how long after an upload it
    # first may (so it does not race the upload's own attempt), and how long it backs off.
    outbox_relay_interval_seconds: float = Field(default=2.0, gt=0)
    outbox_grace_seconds: float = Field(default=10.0, ge=0)
    outbox_retry_seconds: float = Field(default=5.0, gt=0)
    # An Idempotency-Key claimed by an upload (or a restoration) that recorded nothing (its answer
    # lost, its process ended) is taken over by a retry after this long; longer than any takes.
    idempotency_claim_lease_seconds: float = Field(default=60.0, ge=5)
    # How often claims older than a key's lifetime (24 h) are removed.
    idempotency_purge_interval_seconds: float = Field(default=3600.0, gt=0)
    # Retry-After of a 503 while the database or the storage does not answer.
    unavailable_retry_after_seconds: int = Field(default=2, ge=1, le=60)
