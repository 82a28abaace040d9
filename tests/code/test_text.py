"""`features.text`: cleaning of merchant text and the de-duplication key."""

from __future__ import annotations

import math
import unicodedata

import pytest

from rakuten_mlops.features.text import clean_text, normalize_for_dedup


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Caf&eacute; cr&egrave;me", "Café crème"),
        # Double- and triple-escaped entities, as found in the official CSVs.
        ("Caf&amp;eacute;", "Café"),
        ("Caf&amp;amp;eacute;", "Café"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("prix &lt; 10&euro;", "prix < 10€"),
        ("l&#39;&eacute;t&#233;", "l'été"),
        # Tags are removed, <br> in all spellings separates words.
        ("<p>Chaise <b>en bois</b></p>", "Chaise en bois"),
        ("ligne1<br>ligne2<br/>ligne3<BR />ligne4", "ligne1 ligne2 ligne3 ligne4"),
        ("&lt;p&gt;Escaped&lt;/p&gt; tags", "Escaped tags"),
        # Whitespace: NBSP, tabs, newlines, repeated spaces collapse to one space.
        ("Lot\u00a0de\u00a02", "Lot de 2"),
        ("Lot&nbsp;de&nbsp;2", "Lot de 2"),
        ("  a \t\n b  \r\n c ", "a b c"),
        # Control characters and zero-width marks are not text.
        ("abc\x00def\u200bghi\ufeff", "abc def ghi"),
        # Case and accents are kept: they are the model's business.
        ("ÉLÉPHANT Rose", "ÉLÉPHANT Rose"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_clean_text_cleans_merchant_text(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


def test_clean_text_composes_unicode_to_nfc() -> None:
    decomposed = "Cafe\u0301 cre\u0300me"  # e + combining accents
    cleaned = clean_text(decomposed)
    assert cleaned == "Café crème"
    assert unicodedata.is_normalized("NFC", cleaned)
    assert len(cleaned) == len("Café crème")


@pytest.mark.parametrize("value", [None, math.nan, float("nan"), 12, 3.5, b"bytes"])
def test_clean_text_turns_non_strings_into_empty_text(value: object) -> None:
    assert clean_text(value) == ""


@pytest.mark.parametrize(
    "raw",
    ["Caf&amp;eacute; <b>x</b>", "a\u00a0b", "Cafe\u0301", "plain text", "&lt;i&gt;y&lt;/i&gt;"],
)
def test_clean_text_is_idempotent(raw: str) -> None:
    once = clean_text(raw)
    assert clean_text(once) == once


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("Chaise en Bois", ""), ("chaise en bois", "")),
        (("Chaise en bois!", ""), ("Chaise, en bois", "")),
        (("Éléphant rosé", ""), ("elephant rose", "")),
        (("Caf&amp;eacute; noir", ""), ("Café  noir", "")),
        (("<b>Lot</b> de 2", "<p>Neuf</p>"), ("Lot de 2", "neuf")),
        # The key covers title + description, whichever field the words are in.
        (("Lot de 2", "neuf"), ("Lot de 2 neuf", "")),
    ],
)
def test_normalize_for_dedup_ignores_case_accents_punctuation_markup(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert normalize_for_dedup(*first) == normalize_for_dedup(*second)
    assert normalize_for_dedup(*first) != ""


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("Chaise en bois", ""), ("Table en bois", "")),
        (("Lot de 2", ""), ("Lot de 3", "")),
        (("Lot de 2", "rouge"), ("Lot de 2", "bleu")),
    ],
)
def test_normalize_for_dedup_keeps_different_products_apart(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert normalize_for_dedup(*first) != normalize_for_dedup(*second)


def test_normalize_for_dedup_of_empty_text_is_empty() -> None:
    assert normalize_for_dedup("", "") == ""
    assert normalize_for_dedup("  <br> &nbsp; ", "!!") == ""
