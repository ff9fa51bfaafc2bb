from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from facerestore_common.settings import (
    AuthClientSettings,
    BrokerSettings,
    GrpcServerSettings,
    ImageLimitSettings,
    MongoSettings,
    PseudonymSettings,
    RedisSettings,
    ServiceSettings,
    StorageSettings,
)

MIB = 1024 * 1024


class Settings(
    ServiceSettings,
    GrpcServerSettings,
    AuthClientSettings,
    MongoSettings,
    BrokerSettings,
    StorageSettings,
    ImageLimitSettings,
    PseudonymSettings,
    # The library generations (tracked_items.py) that tell the gateway's page cache what changed.
    RedisSettings,
):
    service_name: str = "history"
    grpc_port: int = 50053
    metrics_port: int = 9104
    mongo_database: str = "facerestore_history"

    # Signs the short-lived download tokens that image URLs carry.
    download_token_secret: SecretStr = SecretStr("dev-only-download-token-secret")
    download_token_ttl_seconds: int = Field(default=900, ge=30)

    # The face index of similar-face search: a Qdrant server when QDRANT_URL is set, otherwise
    # Qdrant Edge in-process, persisted under FACE_INDEX_PATH (one process only).
    qdrant_url: str = ""
    qdrant_api_key: SecretStr | None = None
    face_index_path: Path = Path("var/face-index")
    # Collection name prefix: one collection per analyser model, <prefix>-<model>.
    face_index_collection: str = Field(default="faces", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # How long a search waits for the inference side to embed the query photo.
    embed_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    # Exports (exports.py): jobs run at once per replica (0: this replica makes none), how
    # often idle workers look for one, the multipart part size (memory per running export is
    # about three parts), link lifetime, how long an archive is kept, the lease a worker renews
    # while it runs (a crashed worker's job is taken over after it), and claims before failing.
    export_workers: int = Field(default=1, ge=0, le=8)
    export_poll_seconds: float = Field(default=2.0, gt=0)
    export_part_size_bytes: int = Field(default=8 * MIB, ge=5 * MIB, le=512 * MIB)
    export_link_ttl_seconds: int = Field(default=3600, ge=60)
    export_retention_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    export_lease_seconds: float = Field(default=60.0, ge=5)
    export_max_attempts: int = Field(default=3, ge=1, le=10)
    # GET /v1/images/{id}?include=restored_base64 refuses restored images larger than this.
    inline_max_bytes: int = Field(default=4 * MIB, ge=64 * 1024, le=6 * MIB)
    # How often unfinished work is picked up again: purges after "delete all", face index
    # payloads after edits, archives past their retention.
    maintenance_interval_seconds: float = Field(default=30.0, gt=0)
