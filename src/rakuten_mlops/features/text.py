"""Text cleaning shared by data preparation and the model at inference time.

Pure functions: strings in, strings out. The model calls the same `clean_text` on what it
receives, so a raw merchant title and its prepared twin get the same features.
"""

from __future__ import annotations

import html
import re
import unicodedata

_TAG_RE = re.compile(r"<[^>]*>")
_WS_RE = re.compile(r"\s+")
# Characters that are not text: control characters (except whitespace) and zero-width marks.
_CONTROL_RE = re.compile(
    r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200f\ufeff]"
)
_MAX_UNESCAPE_ROUNDS = 3


def clean_text(value: object) -> str:
    """Clean one merchant text field.

    Decodes HTML entities (also double-escaped ones such as ``&amp;eacute;``), removes HTML
    tags, applies Unicode NFC normalisation, drops control characters and collapses
    whitespace. Case and accents are kept: they are the model's business.

    Args:
        value: a string; ``None``, NaN and other non-strings give ``""``.
    """
    if not isinstance(value, str):
        return ""
    text = value
    for _ in range(_MAX_UNESCAPE_ROUNDS):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _TAG_RE.sub(" ", text)
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL_RE.sub(" ", text)
    return _WS_RE.sub(" ", text).strip()


def normalize_for_dedup(designation: str, description: str = "") -> str:
    """Key under which two products count as the same text (for leakage checks).

    Case-, accent- and punctuation-insensitive version of the cleaned title + description.
    """
    text = f"{clean_text(designation)} {clean_text(description)}".casefold()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^\w]+", " ", text)
    return _WS_RE.sub(" ", text).strip()
