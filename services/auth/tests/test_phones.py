"""Phone numbers: parsed, checked to be able to receive a text, and normalised to E.164."""

from __future__ import annotations

import pytest

from auth_service.phones import PhonePolicy, normalize_phone
from facerestore_common.errors import InvalidArgument


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        pytest.param("+49 151 23456789", "+4915123456789", id="germany-mobile"),
        pytest.param("+33 6 12 34 56 78", "+33612345678", id="france-mobile"),
        pytest.param("+1 415 555 0123", "+14155550123", id="us-fixed-line-or-mobile"),
        pytest.param("+44 7400 123456", "+447400123456", id="uk-mobile"),
        pytest.param("+81 90 1234 5678", "+819012345678", id="japan-mobile"),
    ],
)
def test_mobile_numbers_of_several_countries_become_e164(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw",
    [
        "+4915123456789",
        "+49-151-2345-6789",
        "+49 (0)151 2345 6789",
        "  +49 151 2345 6789  ",
        "+49.151.2345.6789",
    ],
)
def test_spaces_dashes_dots_and_brackets_are_accepted(raw: str) -> None:
    assert normalize_phone(raw) == "+4915123456789"


def test_default_region_is_used_for_a_number_without_country_code() -> None:
    assert normalize_phone("0151 23456789", "DE") == "+4915123456789"
    assert normalize_phone("06 12 34 56 78", "fr") == "+33612345678"  # region code in any case
    assert normalize_phone("(415) 555-0123", "US") == "+14155550123"


def test_an_explicit_country_code_wins_over_the_default_region() -> None:
    assert normalize_phone("+33 6 12 34 56 78", "DE") == "+33612345678"


def test_without_a_default_region_a_plus_is_required() -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalize_phone("0151 23456789")
    assert caught.value.reason == "invalid-phone"


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        pytest.param("not a phone number", "", id="text"),
        pytest.param("", "", id="empty"),
        pytest.param("+49", "", id="country-code-only"),
        pytest.param("+49 151 23", "", id="too-short"),
        pytest.param("+49 151 234567890123456", "", id="too-long"),
        pytest.param("+999 1234567", "", id="unknown-country-code"),
        pytest.param("+1 555 555 5555", "", id="unassigned-area-code"),
        pytest.param("12", "DE", id="too-short-with-region"),
        pytest.param("+44 20 7123 4567", "", id="uk-landline"),
        pytest.param("030 1234567", "DE", id="german-landline"),
        pytest.param("+33 1 23 45 67 89", "", id="french-landline"),
    ],
)
def test_invalid_numbers_and_landlines_are_refused(raw: str, region: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalize_phone(raw, region)
    assert caught.value.reason == "invalid-phone"


@pytest.mark.parametrize(("raw", "region"), [("+44 20 7123 4567", ""), ("030 1234567", "DE")])
def test_a_valid_landline_is_refused_because_it_cannot_receive_texts(raw: str, region: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalize_phone(raw, region)
    assert caught.value.reason == "invalid-phone"
    assert "text messages" in caught.value.detail


def test_an_admin_finds_a_number_from_a_denied_region_that_could_not_get_a_code_today() -> None:
    # Region rules decide who gets codes; a lookup must still find users who signed up before a rule changed.
    policy = PhonePolicy("DE", allowed_regions={"FR"}, denied_regions={"DE"})
    with pytest.raises(InvalidArgument) as caught:
        policy.normalize("0151 23456789")
    assert caught.value.reason == "phone-region-not-allowed"
    assert policy.parse("0151 23456789") == "+4915123456789"
    with pytest.raises(InvalidArgument):
        policy.parse("12ab")
