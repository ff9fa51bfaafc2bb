"""PUBLIC_BASE_URL: where clients reach the API, and so where image links point."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway_service.settings import Settings


def test_production_needs_an_https_address() -> None:
    with pytest.raises(ValidationError, match="PUBLIC_BASE_URL must be an https URL"):
        Settings(environment="production", public_base_url="http://api.example.com")

    settings = Settings(environment="production", public_base_url="https://api.example.com/")
    assert settings.public_base_url == "https://api.example.com"
    assert settings.served_over_https


@pytest.mark.parametrize(
    "address", ["api.example.com", "ftp://api.example.com", "https://", "https://user@evil.example", "https://a?b"]
)
def test_anything_but_an_http_origin_is_refused(address: str) -> None:
    with pytest.raises(ValidationError, match="PUBLIC_BASE_URL must be an http"):
        Settings(public_base_url=address)


def test_the_local_default_is_plain_http_without_hsts() -> None:
    settings = Settings()
    assert settings.public_base_url == "http://127.0.0.1:8080"
    assert not settings.served_over_https
