from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from facerestore_common.settings import (
    AuthClientSettings,
    GrpcServerSettings,
    MongoSettings,
    RedisSettings,
    ServiceSettings,
)


class Settings(ServiceSettings, GrpcServerSettings, MongoSettings, RedisSettings, AuthClientSettings):
    service_name: str = "auth"
    grpc_port: int = 50051
    mongo_database: str = "facerestore_auth"

    otp_ttl_seconds: int = Field(default=300, ge=30)
    otp_max_attempts: int = Field(default=5, ge=1)
    otp_hmac_secret: SecretStr = SecretStr("dev-only-otp-hmac-secret")
    # Region assumed for numbers written without +country code; empty means "+ required".
    phone_default_region: str = ""

    sms_provider: Literal["outbox", "console"] = "outbox"
    sms_outbox_path: str = "var/sms_outbox.jsonl"

    # Comma-separated E.164 numbers that get role admin when they sign in.
    admin_phones: str = ""

    jwt_key_dir: str = "var/keys"
    access_token_ttl_seconds: int = Field(default=900, ge=60)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=300)

    def admin_phone_list(self) -> list[str]:
        return [phone.strip() for phone in self.admin_phones.split(",") if phone.strip()]
