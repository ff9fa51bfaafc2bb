"""Tags, notes and locations (uploads and edits): tags normalised, text bounded, Unicode kept, controls refused."""

from __future__ import annotations

import pytest

from facerestore_common.errors import InvalidArgument
from facerestore_common.metadata import MAX_LOCATION, MAX_NOTE, MAX_TAGS, parse_metadata


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


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Ground control 🧑\u200d🚀", id="zwj-astronaut"),
        pytest.param("👨\u200d👩\u200d👧\u200d👦 family", id="zwj-family"),
        pytest.param("❤\ufe0f", id="variation-selector"),
        pytest.param("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", id="subdivision-flag-tags"),
        pytest.param("👍🏽", id="skin-tone-modifier"),
        pytest.param("\u05e9\u05dc\u05d5\u05dd \u200f\u05e2\u05d5\u05dc\u05dd", id="hebrew-with-rlm"),
        pytest.param("नमस्ते", id="devanagari-with-zwj-free-conjuncts"),
    ],
)
@pytest.mark.parametrize("field", ["note", "location"])
def test_unicode_text_with_joiners_and_emoji_sequences_is_kept_as_written(field: str, text: str) -> None:
    metadata = parse_metadata([], text if field == "note" else "", text if field == "location" else "")

    assert getattr(metadata, field) == text


def test_text_is_stored_in_nfc() -> None:
    decomposed = "Mu\u0308nchen"

    metadata = parse_metadata([], decomposed, decomposed)

    assert metadata.note == metadata.location == "M\u00fcnchen"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("lone \ud800 surrogate", id="lone-surrogate"),
        pytest.param("line\u2028separator", id="line-separator"),
        pytest.param("isolate \u2067x\u2069", id="bidi-isolate"),
        pytest.param("c1\x85control", id="c1-next-line"),
    ],
)
def test_other_invisible_controls_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_metadata([], text, "")
    assert caught.value.reason == "invalid-metadata"


def test_a_location_is_one_line() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_metadata([], "", "Lake\nConstance")
    assert "location" in caught.value.detail


def test_length_counts_characters_not_bytes() -> None:
    astronaut = "🧑\u200d🚀"  # three characters, eleven bytes in UTF-8
    note = astronaut * (MAX_NOTE // 3)

    assert parse_metadata([], note, "").note == note
