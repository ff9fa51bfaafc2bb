from __future__ import annotations

from typing import Literal

from pydantic import Field

from facerestore_common.settings import BrokerSettings, MongoSettings, ServiceSettings, StorageSettings


class Settings(ServiceSettings, BrokerSettings, StorageSettings, MongoSettings):
    service_name: str = "inference"
    # Only the record of handled event ids lives here.
    mongo_database: str = "facerestore_inference"

    # `auto` picks gfpgan when its weights file is present, else classical; and insightface
    # when the buffalo_l pack is present, else dlib. An explicit choice that cannot load
    # stops the service at start-up with a message naming the missing file or package.
    restorer: Literal["auto", "gfpgan", "classical"] = "auto"
    face_analyzer: Literal["auto", "insightface", "dlib"] = "auto"
    # Weights are put here by the deployment (a volume or a verifying init step); nothing
    # is ever downloaded at run time.
    model_dir: str = "var/models"
    gfpgan_weights: str = "GFPGANv1.4.pth"
    # Expected SHA-256 of the weights file; empty skips the check.
    gfpgan_sha256: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Half precision on CUDA: "auto" follows spandrel, which marks GFPGAN as not fp16-safe
    # (so fp32); "true" forces fp16 on a GPU. Never on the CPU.
    gfpgan_half: Literal["auto", "true", "false"] = "auto"
    restore_batch_size: int = Field(default=4, ge=1)
    # GFPGAN: faces that messages in hand submit within this window share a forward pass.
    restore_batch_window_ms: int = Field(default=20, ge=0)

    thumbnail_max_side: int = Field(default=256, ge=32)
    output_jpeg_quality: int = Field(default=92, ge=50, le=100)

    # Transient failures (storage, broker) are retried through a delay queue with
    # exponential backoff; after this many attempts the item fails with a reason.
    max_attempts: int = Field(default=4, ge=1)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    # A message whose deliveries ended this often without an outcome (the worker died or lost
    # the broker while holding it) is given up at its next delivery: a crash loop ends.
    max_unfinished_deliveries: int = Field(default=5, ge=1)

    metrics_host: str = "127.0.0.1"
    # Prometheus metrics on this port; 0 turns the endpoint off.
    metrics_port: int = Field(default=9100, ge=0)
    shutdown_grace_seconds: float = Field(default=30.0, gt=0)
