"""Phone numbers, parsed and normalised to E.164."""

from __future__ import annotations

import phonenumbers

from facerestore_common.errors import InvalidArgument

_ACCEPTED_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}


def normalize_phone(raw: str, default_region: str = "") -> str:
    """Return the E.164 form of a valid, SMS-capable number, or raise InvalidArgument."""
    try:
        number = phonenumbers.parse(raw, default_region.upper() or None)
    except phonenumbers.NumberParseException:
        raise InvalidArgument("this is not a phone number", reason="invalid-phone") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidArgument("this phone number is not valid", reason="invalid-phone")
    if phonenumbers.number_type(number) not in _ACCEPTED_TYPES:
        raise InvalidArgument("this phone number cannot receive text messages", reason="invalid-phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class PhonePolicy:
    """Which numbers may get codes: valid mobiles, optionally only from allowed regions and
    never from denied ones (a defence against SMS toll fraud)."""

    def __init__(
        self, default_region: str = "", allowed_regions: set[str] | None = None, denied_regions: set[str] | None = None
    ) -> None:
        self._default_region = default_region
        self._allowed = {region.upper() for region in allowed_regions or set()}
        self._denied = {region.upper() for region in denied_regions or set()}

    def parse(self, raw: str) -> str:
        """The E.164 form of any valid number, whatever its country: for finding a user, not for sending."""
        return normalize_phone(raw, self._default_region)

    def normalize(self, raw: str) -> str:
        phone = normalize_phone(raw, self._default_region)
        region = phonenumbers.region_code_for_number(phonenumbers.parse(phone))
        if (self._allowed and region not in self._allowed) or region in self._denied:
            raise InvalidArgument(
                "codes cannot be sent to numbers from this country", reason="phone-region-not-allowed"
            )
        return phone
