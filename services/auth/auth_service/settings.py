from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from facerestore_common.settings import (
    AuthClientSettings,
    BrokerSettings,
    GrpcServerSettings,
    MongoSettings,
    PseudonymSettings,
    RedisSettings,
    ServiceSettings,
)


class Settings(
    ServiceSettings,
    GrpcServerSettings,
    MongoSettings,
    RedisSettings,
    AuthClientSettings,
    BrokerSettings,
    PseudonymSettings,
):
    service_name: str = "auth"
    # How often an account erasure that could not publish user.deleted (broker away, crash) is retried.
    erasure_retry_seconds: float = Field(default=10.0, gt=0)
    grpc_port: int = 50051
    metrics_port: int = 9102
    mongo_database: str = "facerestore_auth"

    otp_ttl_seconds: int = Field(default=300, ge=30)
    otp_max_attempts: int = Field(default=5, ge=1)
    otp_hmac_secret: SecretStr = SecretStr("dev-only-otp-hmac-secret")
    # Region assumed for numbers written without +country code; empty means "+ required".
    phone_default_region: str = ""

    # Comma-separated ISO 3166 region codes (e.g. "DE,FR"); empty allows every region.
    # A defence against SMS toll fraud: codes only go to the regions the product serves.
    phone_allowed_regions: str = ""
    phone_denied_regions: str = ""

    # Limits on code requests and verifications, in the `limits` notation ("5/hour").
    otp_resend_cooldown_seconds: int = Field(default=60, ge=0)
    otp_requests_per_phone: str = "5/hour"
    otp_requests_per_ip: str = "30/hour"
    otp_verifications_per_phone: str = "15/hour"

    # Fixed codes for app-store reviewers: "+4915100000000=123456,..."; off when empty and
    # refused in production.
    test_phone_codes: SecretStr = SecretStr("")

    sms_provider: Literal["outbox", "console", "twilio"] = "outbox"
    sms_outbox_path: str = "var/sms_outbox.jsonl"
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    # Sender: a Messaging Service SID (preferred) or a phone number in E.164.
    twilio_messaging_service_sid: str = ""
    twilio_from_number: str = ""
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_timeout_seconds: float = Field(default=10.0, gt=0)

    # Email codes (a fallback sign-in for users who added and verified an address).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    smtp_use_tls: bool = False
    smtp_from: str = "Face Restore <no-reply@facerestore.local>"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)

    # Comma-separated E.164 numbers that get role admin when they sign in.
    admin_phones: str = ""

    jwt_key_dir: str = "var/keys"
    # How often the key directory is re-read, so a rotated key is picked up without a restart.
    jwt_key_reload_seconds: int = Field(default=60, ge=1)
    # A rotated key is published this long before it signs (longer than verifiers' 5 s
    # refetch throttle, so none of them refuses a new token for an unknown kid).
    jwt_key_activation_seconds: int = Field(default=10, ge=0)
    access_token_ttl_seconds: int = Field(default=900, ge=60)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=300)

    def admin_phone_list(self) -> list[str]:
        return _split(self.admin_phones)

    def allowed_regions(self) -> set[str]:
        return {region.upper() for region in _split(self.phone_allowed_regions)}

    def denied_regions(self) -> set[str]:
        return {region.upper() for region in _split(self.phone_denied_regions)}

    def test_codes(self) -> dict[str, str]:
        pairs = (entry.partition("=") for entry in _split(self.test_phone_codes.get_secret_value()))
        return {phone.strip(): code.strip() for phone, _, code in pairs}

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for phone, code in self.test_codes().items():
            if not (len(code) == 6 and code.isascii() and code.isdigit()):
                raise ValueError(f"TEST_PHONE_CODES: the code for {phone} must be 6 digits")
        if self.environment == "production":
            if self.test_codes():
                raise ValueError("TEST_PHONE_CODES must be empty when ENVIRONMENT=production")
            if self.sms_provider != "twilio":
                raise ValueError("SMS_PROVIDER must be twilio when ENVIRONMENT=production")
        if self.sms_provider == "twilio":
            missing = [
                name
                for name, value in (
                    ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                    ("TWILIO_AUTH_TOKEN", self.twilio_auth_token.get_secret_value()),
                    (
                        "TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER",
                        self.twilio_messaging_service_sid or self.twilio_from_number,
                    ),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"SMS_PROVIDER=twilio needs {', '.join(missing)}")
        return self


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
