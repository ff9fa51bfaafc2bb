from __future__ import annotations

from pydantic import Field

from facerestore_common.settings import AuthClientSettings, RedisSettings, ServiceSettings


class Settings(ServiceSettings, AuthClientSettings, RedisSettings):
    service_name: str = "gateway"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    upload_grpc_target: str = "127.0.0.1:50052"
    history_grpc_target: str = "127.0.0.1:50053"
    admin_grpc_target: str = "127.0.0.1:50054"
    # Deadline for a call to a service; uploads get the longer one.
    grpc_deadline_seconds: float = Field(default=5.0, gt=0)
    upload_deadline_seconds: float = Field(default=20.0, gt=0)
    max_upload_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Comma-separated addresses or CIDR ranges of the proxies in front of the gateway (the
    # ingress, a load balancer). X-Forwarded-For is believed only when the direct peer is one
    # of them; from anyone else it is ignored, so it cannot be spoofed to dodge IP limits.
    trusted_proxies: str = ""
    # Rate limits (the `limits` notation). Uploads per signed-in user fail closed without
    # Redis; the per-client-IP limit on every route fails open.
    rate_limit_uploads_per_user: str = "10/hour"
    rate_limit_per_ip: str = "300/minute"
