from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from facerestore_common.settings import BrokerSettings, MongoSettings, RedisSettings, ServiceSettings, StorageSettings
from facerestore_common.topology import RESTORER_FAMILIES

ROLES = ("restore", "embed")


class Settings(ServiceSettings, BrokerSettings, StorageSettings, MongoSettings, RedisSettings):
    service_name: str = "inference"
    # Only the record of handled event ids lives here.
    mongo_database: str = "facerestore_inference"

    # What this worker does, comma separated: `restore` (consume image.uploaded) and/or
    # `embed` (answer similar-face search's embed requests). An embed-only worker never loads
    # the restorer, so a small CPU pod keeps search working while GPU workers scale to zero.
    inference_roles: str = "restore,embed"

    # The restorer families this worker serves, comma separated (gfpgan, codeformer, classical):
    # it consumes each one's queue and announces each one in the model registry. `auto` serves
    # every family that can run here: gfpgan and codeformer where their weights files are
    # present, and classical always. A family named here whose weights are missing stops the
    # service at start-up with a message naming the file: never a silent substitute.
    restorers: str = "auto"
    # `auto`: insightface when the buffalo_l pack is present, else dlib. An explicit choice
    # that cannot load stops the service at start-up with a message naming what is missing.
    face_analyzer: Literal["auto", "insightface", "dlib"] = "auto"
    # The model registry in Redis (REDIS_URL, REDIS_KEY_PREFIX): what this worker serves is
    # announced every ttl/3 seconds and expires ttl seconds after the last announcement.
    model_announce_ttl_seconds: float = Field(default=30.0, gt=0)
    # Names this worker in the registry; empty: "<host name>-<process id>" (the pod's name on Kubernetes).
    worker_id: str = ""
    # The worker group (Helm: inference.workerGroups[].name). With STANDBY_OFFER_SECONDS > 0 the
    # group's models stay offered for that long after its last worker stopped: for a group that
    # KEDA scales to zero and starts again when a message waits in its queues.
    worker_group: str = ""
    standby_offer_seconds: float = Field(default=0.0, ge=0)
    # Weights are put here by the deployment (a volume or a verifying init step); nothing
    # is ever downloaded at run time.
    model_dir: str = "var/models"
    # GFPGANv1.4.pth or GFPGANv1.3.pth (the same network, trained differently).
    gfpgan_weights: str = "GFPGANv1.4.pth"
    # Expected SHA-256 of the weights file; empty skips the check.
    gfpgan_sha256: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Half precision on CUDA: "auto" follows spandrel, which marks GFPGAN as not fp16-safe
    # (so fp32); "true" forces fp16 on a GPU. Never on the CPU.
    gfpgan_half: Literal["auto", "true", "false"] = "auto"
    codeformer_weights: str = "codeformer.pth"
    # Expected SHA-256 of codeformer.pth; empty skips the check.
    codeformer_sha256: str = ""
    # CodeFormer's w when a request gives none: 0 strongest restoration, 1 closest to the input.
    codeformer_fidelity: float = Field(default=0.5, ge=0.0, le=1.0)
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

    # METRICS_PORT (default 9100) also serves /healthz and /readyz. Liveness fails when the
    # event loop has not turned for this long, or one message has been in hand for this long.
    liveness_max_loop_stall_seconds: float = Field(default=30.0, gt=0)
    liveness_max_message_hold_seconds: float = Field(default=600.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, gt=0)

    @field_validator("inference_roles")
    @classmethod
    def _known_roles(cls, value: str) -> str:
        roles = {role.strip() for role in value.split(",") if role.strip()}
        unknown = roles - set(ROLES)
        if unknown or not roles:
            raise ValueError(f"INFERENCE_ROLES must name one or more of {', '.join(ROLES)}, got {value!r}")
        return ",".join(role for role in ROLES if role in roles)

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.inference_roles.split(","))

    @field_validator("restorers")
    @classmethod
    def _known_restorers(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if names == ["auto"]:
            return "auto"
        unknown = [name for name in names if name not in RESTORER_FAMILIES]
        if unknown or not names:
            raise ValueError(
                f"RESTORERS must be auto or name one or more of {', '.join(RESTORER_FAMILIES)}, got {value!r}"
            )
        return ",".join(family for family in RESTORER_FAMILIES if family in names)

    @property
    def restorer_families(self) -> tuple[str, ...] | None:
        """The families named in RESTORERS, or None for auto."""
        return None if self.restorers == "auto" else tuple(self.restorers.split(","))
