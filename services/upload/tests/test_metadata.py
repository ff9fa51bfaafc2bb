"""The optional fields of an upload: tags normalised, note and location bounded and printable."""

from __future__ import annotations

import pytest

from facerestore_common.errors import InvalidArgument
from upload_service.metadata import MAX_LOCATION, MAX_NOTE, MAX_TAGS, parse_metadata


def test_tags_are_lowercased_trimmed_and_deduplicated_in_first_seen_order() -> None:
    metadata = parse_metadata(["  Family ", "BEACH", "family", "beach ", "Grand-Ma 1990"], "", "")

    assert metadata.tags == ["family", "beach", "grand-ma 1990"]


def test_empty_and_blank_tags_are_dropped() -> None:
    metadata = parse_metadata(["", "   ", "\t", "kept"], "", "")

    assert metadata.tags == ["kept"]


def test_no_fields_at_all_is_fine() -> None:
    metadata = parse_metadata([], "", "")

    assert metadata.tags == []
    assert metadata.note == ""
    assert metadata.location == ""


def test_tags_may_use_letters_of_any_script_digits_dots_dashes_and_underscores() -> None:
    metadata = parse_metadata(["Ünïcødé", "Москва", "v1.2_final-cut", "2024"], "", "")

    assert metadata.tags == ["ünïcødé", "москва", "v1.2_final-cut", "2024"]


def test_note_and_location_are_trimmed() -> None:
    metadata = parse_metadata([], "  Grandma at the lake.\nSummer.  \n", "  Lake Constance ")

    assert metadata.note == "Grandma at the lake.\nSummer."
    assert metadata.location == "Lake Constance"


def test_note_may_contain_newlines_and_tabs() -> None:
    metadata = parse_metadata([], "line one\n\tindented", "")

    assert metadata.note == "line one\n\tindented"


def test_exactly_the_maximum_number_of_tags_is_accepted() -> None:
    tags = [f"tag{index}" for index in range(MAX_TAGS)]

    assert parse_metadata(tags, "", "").tags == tags


def test_more_than_the_maximum_number_of_tags_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_metadata([f"tag{index}" for index in range(MAX_TAGS + 1)], "", "")
    assert caught.value.reason == "invalid-metadata"


def test_duplicates_do_not_count_towards_the_tag_limit() -> None:
    tags = [f"tag{index}" for index in range(MAX_TAGS)] + ["TAG0", " tag1 "]

    assert len(parse_metadata(tags, "", "").tags) == MAX_TAGS


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param("<script>", id="angle-brackets"),
        pytest.param("a/b", id="slash"),
        pytest.param("-leading-dash", id="leading-dash"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("semi;colon", id="semicolon"),
        pytest.param("new\nline", id="inner-newline"),
        pytest.param("emoji😀", id="emoji"),
        pytest.param("x" * 33, id="33-characters"),
    ],
)
def test_bad_tags_are_refused(tag: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_metadata(["fine", tag], "", "")
    assert caught.value.reason == "invalid-metadata"


def test_a_32_character_tag_is_accepted() -> None:
    assert parse_metadata(["x" * 32], "", "").tags == ["x" * 32]


def test_note_longer_than_the_limit_is_refused() -> None:
    assert parse_metadata([], "n" * MAX_NOTE, "").note == "n" * MAX_NOTE

    with pytest.raises(InvalidArgument) as caught:
        parse_metadata([], "n" * (MAX_NOTE + 1), "")
    assert caught.value.reason == "invalid-metadata"
    assert "note" in caught.value.detail


def test_location_longer_than_the_limit_is_refused() -> None:
    assert parse_metadata([], "", "l" * MAX_LOCATION).location == "l" * MAX_LOCATION

    with pytest.raises(InvalidArgument) as caught:
        parse_metadata([], "", "l" * (MAX_LOCATION + 1))
    assert caught.value.reason == "invalid-metadata"
    assert "location" in caught.value.detail


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("nul\x00byte", id="nul"),
        pytest.param("bell\x07", id="bell"),
        pytest.param("escape \x1b[31mred", id="ansi-escape"),
        pytest.param("carriage\rreturn", id="carriage-return"),
        pytest.param("delete\x7f", id="delete"),
        pytest.param("right-to-left \u202e override", id="bidi-override"),
    ],
)
@pytest.mark.parametrize("field", ["note", "location"])
def test_control_characters_are_refused(field: str, text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_metadata([], text if field == "note" else "", text if field == "location" else "")
    assert caught.value.reason == "invalid-metadata"
    assert field in caught.value.detail
