from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from facerestore_common.settings import AuthClientSettings, BrokerSettings, RedisSettings, ServiceSettings


class Settings(ServiceSettings, AuthClientSettings, RedisSettings, BrokerSettings):
    service_name: str = "gateway"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # Rate-limit refusals are tallied per limit and hour and sent to the admins' statistics
    # (activity.recorded on the broker) this often.
    activity_flush_seconds: float = Field(default=2.0, gt=0)
    metrics_port: int = 9101
    # /readyz answers from a result this young, so that many probes cost one round of checks.
    readyz_cache_seconds: float = Field(default=2.0, ge=0)
    # The page cache (page_cache.py): memory for kept answers of users' own reads (0: off) and
    # the longest an answer is served again, which bounds how stale one can be if history could
    # not raise a generation (Redis unreachable from it) and keeps the links in it far from expiry.
    page_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    page_cache_max_age_seconds: float = Field(default=30.0, ge=0, le=120)
    upload_grpc_target: str = "127.0.0.1:50052"
    history_grpc_target: str = "127.0.0.1:50053"
    admin_grpc_target: str = "127.0.0.1:50054"
    # Deadline for a call to a service; uploads get the longer one.
    grpc_deadline_seconds: float = Field(default=5.0, gt=0)
    upload_deadline_seconds: float = Field(default=20.0, gt=0)
    # A search may wait for a query photo to be embedded (history's EMBED_TIMEOUT_SECONDS).
    search_deadline_seconds: float = Field(default=15.0, gt=0)
    max_upload_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Any other request body (JSON) larger than this is refused with 413 while it streams in.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Slow clients: time to send a request's headers, and then its body (1 MB in 10 s is 100 KB/s).
    header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    body_read_timeout_seconds: float = Field(default=10.0, gt=0)
    # Where clients reach the API; image links are built from it, never from a request's Host
    # header. https in production (HSTS is then sent on every answer).
    public_base_url: str = "http://127.0.0.1:8080"
    # Comma-separated addresses or CIDR ranges of the proxies in front of the gateway (the
    # ingress, a load balancer). X-Forwarded-For is believed only when the direct peer is one
    # of them; from anyone else it is ignored, so it cannot be spoofed to dodge IP limits.
    trusted_proxies: str = ""
    # Rate limits (the `limits` notation). Uploads per signed-in user fail closed without
    # Redis; the per-client-IP limit on every route fails open.
    rate_limit_uploads_per_user: str = "10/hour"
    # Searches per signed-in user; fails closed without Redis like uploads (a search may embed a photo).
    rate_limit_searches_per_user: str = "30/minute"
    rate_limit_per_ip: str = "300/minute"
    # Exports per signed-in user (POST /v1/exports); fails closed without Redis (an export reads
    # the whole history). The download of an archive may take this long.
    rate_limit_exports_per_user: str = "3/day"
    export_download_deadline_seconds: float = Field(default=3600.0, gt=0)
    # Which restorer models can run (GET /v1/models, the check on every upload): read from the
    # workers' registry at most this often, and a model seen this recently still counts (a worker
    # restarting, Redis restarted); uploads for it wait in its queue meanwhile.
    models_refresh_seconds: float = Field(default=1.0, ge=0)
    models_grace_seconds: float = Field(default=60.0, ge=0)
    # The built web client (`make web`: web/ -> web/dist), served at `/`; relative to the working directory.
    webapp_dir: str = "web/dist"

    @field_validator("public_base_url")
    @classmethod
    def _an_origin(cls, value: str) -> str:
        scheme, _, rest = value.partition("://")
        if scheme not in ("http", "https") or not rest or any(c in rest for c in "?#@ "):
            raise ValueError("PUBLIC_BASE_URL must be an http(s) URL such as https://api.example.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _https_in_production(self) -> Settings:
        if self.environment == "production" and not self.public_base_url.startswith("https://"):
            raise ValueError("PUBLIC_BASE_URL must be an https URL when ENVIRONMENT=production")
        return self

    @property
    def served_over_https(self) -> bool:
        return self.public_base_url.startswith("https://")
