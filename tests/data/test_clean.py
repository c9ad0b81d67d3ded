"""Cleaning transforms and filters, each on crafted documents."""

from __future__ import annotations

import pytest

from genlab import config
from genlab.config import CleanSection
from genlab.data.clean import clean, dup_line_fraction, dup_ngram_fraction
from genlab.data.documents import Document
from genlab.errors import ConfigError


def _docs(*texts):
    return [
        Document(id=f"d{i}", text=t, source="src", position=f"line {i}")
        for i, t in enumerate(texts)
    ]


def _reasons(result):
    return {r.id: r.reason for r in result.removed}


def test_unicode_nfc_vs_nfkc():
    decomposed = "cafe\u0301 \ufb01le"  # e + combining acute; "fi" ligature
    nfc = clean(_docs(decomposed), CleanSection(unicode_form="NFC")).kept[0].text
    nfkc = clean(_docs(decomposed), CleanSection(unicode_form="NFKC")).kept[0].text
    assert nfc == "caf\u00e9 \ufb01le"
    assert nfkc == "caf\u00e9 file"


def test_whitespace_normalisation_keeps_indentation():
    text = "def f():\r\n    return 1   \n\n\n\n\nx\u00a0=\u20092\n\n"
    result = clean(_docs(text), CleanSection())
    assert result.kept[0].text == "def f():\n    return 1\n\nx = 2"
    assert result.counts["whitespace_changed"] == 1


def test_control_characters_removed_and_counted():
    result = clean(_docs("bell\x07 and\x1b esc\tok\nline"), CleanSection())
    assert result.kept[0].text == "bell and esc\tok\nline"
    assert result.counts["control_chars_removed"] == 2


def test_empty_after_cleaning_is_removed():
    result = clean(_docs("  \x00\x07  \n\n", "real"), CleanSection())
    assert _reasons(result) == {"d0": "empty"}
    assert [d.text for d in result.kept] == ["real"]


@pytest.mark.parametrize(
    ("options", "removed_id", "reason"),
    [
        (CleanSection(min_chars=10), "d0", "min_chars"),
        (CleanSection(max_chars=20), "d2", "max_chars"),
        (CleanSection(min_words=3), "d0", "min_words"),
        (CleanSection(max_words=5), "d2", "max_words"),
    ],
)
def test_length_filters(options, removed_id, reason):
    docs = _docs("tiny doc", "a medium sized doc", "one two three four five six seven eight")
    result = clean(docs, options)
    assert _reasons(result) == {removed_id: reason}
    assert result.counts[reason] == 1
    assert result.counts["kept"] == 2


def test_duplicated_lines_filter():
    looping = "\n".join(["buy now"] * 8 + ["unique line"])
    prose = "first line\nsecond line\nthird line"
    assert dup_line_fraction(looping) == pytest.approx(7 / 9)
    result = clean(_docs(looping, prose), CleanSection(max_dup_line_fraction=0.3))
    assert _reasons(result) == {"d0": "dup_lines"}


def test_duplicated_ngram_filter():
    spam = " ".join(["the quick brown fox"] * 10)
    prose = "a b c d e f g h i j k l m n o p"
    assert dup_ngram_fraction(spam.split(), 3) > 0.9
    assert dup_ngram_fraction(prose.split(), 3) == 0.0
    result = clean(_docs(spam, prose), CleanSection(max_dup_ngram_fraction=0.2, dup_ngram_size=3))
    assert _reasons(result) == {"d0": "dup_ngrams"}


def test_alpha_fraction_filter():
    result = clean(
        _docs("1234 5678 90 ++ --", "mostly words here 1"), CleanSection(min_alpha_fraction=0.5)
    )
    assert _reasons(result) == {"d0": "min_alpha"}


def test_drop_patterns_filter():
    result = clean(
        _docs("Lorem ipsum dolor", "fine text", "see http://spam.example"),
        CleanSection(drop_patterns=[r"(?i)lorem ipsum", r"https?://"]),
    )
    assert _reasons(result) == {"d0": "drop_pattern", "d2": "drop_pattern"}
    assert result.removed[0].position == "line 0"  # provenance carried


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.clean.unicode_form=NFD", "data.clean.unicode_form"),
        ("data.clean.min_chars=-1", "data.clean.min_chars"),
        ("data.clean.max_words=2", "max_words"),  # below min_words=5
        ("data.clean.min_alpha_fraction=1.5", "data.clean.min_alpha_fraction"),
        ("data.clean.drop_patterns=['(unclosed']", "drop_patterns"),
        ("data.clean.dup_ngram_size=0", "data.clean.dup_ngram_size"),
    ],
)
def test_bad_settings_are_one_line_config_errors(override, key):
    with pytest.raises(ConfigError) as err:
        config.load(None, ["data.clean.min_words=5", override])
    message = str(err.value)
    assert key in message and "\n" not in message and len(message) <= 300


def test_the_control_character_precheck_agrees_with_the_regex():
    """The ASCII fast path (delete the allowed bytes, see what is left) says "has control
    characters" exactly where the regex finds one, for ASCII and non-ASCII texts."""
    import random

    from genlab.data.clean import _CONTROL, _has_control

    rng = random.Random(0)
    for _ in range(5000):
        codes = [rng.choice([rng.randrange(0, 0xA0), rng.randrange(32, 127)]) for _ in range(8)]
        text = "".join(map(chr, codes[: rng.randrange(0, 9)]))
        assert _has_control(text) == (_CONTROL.search(text) is not None), repr(text)
