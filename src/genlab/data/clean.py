"""Cleaning: normalise text, then drop documents that fail quality filters.

Transforms (in this order): Unicode normalisation, whitespace normalisation, control-character
removal. Filters (in this order, the first one that fails names the removal): empty, length in
characters and words, duplicated-line share, duplicated word n-gram share, alphabetic share,
regex drop patterns. Every step is counted, and every dropped document gets a `Removal`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from genlab.data.documents import Document
from genlab.data.provenance import Removal
from genlab.errors import ConfigError

# Filter names: the `reason` of a Removal and the keys of CleanResult.counts.
FILTERS = (
    "empty",
    "min_chars",
    "max_chars",
    "min_words",
    "max_words",
    "dup_lines",
    "dup_ngrams",
    "min_alpha",
    "drop_pattern",
)

_KEEP_CONTROL = {"\n", "\t", "\r"}
# Horizontal whitespace other than a plain space/tab (NBSP, thin space, ideographic space ...).
_ODD_SPACE = re.compile(r"[^\S\n\t ]")
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class CleanOptions:
    """Which transforms and filters to apply. A filter set to None (or 0 for minimums) is off.

    unicode_form:            "NFC" (safe default), "NFKC" (also folds compatibility forms such
                             as full-width letters and ligatures) or None
    normalize_whitespace:    unify line endings and odd spaces, strip trailing spaces, collapse
                             runs of blank lines; leading indentation is kept (code matters)
    remove_control_chars:    drop C0/C1 control characters except newline, tab, carriage return
    max_dup_line_fraction:   drop when this share of non-empty lines repeats an earlier line
    dup_ngram_size:          n for the word n-gram repetition filter
    max_dup_ngram_fraction:  drop when this share of word n-grams occurs more than once
    min_alpha_fraction:      drop when alphabetic characters are a smaller share of the
                             non-whitespace characters
    drop_patterns:           regular expressions; a document matching any is dropped
    """

    unicode_form: Literal["NFC", "NFKC"] | None = "NFC"
    normalize_whitespace: bool = True
    remove_control_chars: bool = True
    min_chars: int = 1
    max_chars: int | None = None
    min_words: int = 0
    max_words: int | None = None
    max_dup_line_fraction: float | None = None
    dup_ngram_size: int = 5
    max_dup_ngram_fraction: float | None = None
    min_alpha_fraction: float | None = None
    drop_patterns: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.unicode_form not in ("NFC", "NFKC", None):
            raise ConfigError(
                f"data.clean.unicode_form must be 'NFC', 'NFKC' or null, got "
                f"{self.unicode_form!r}; use 'NFC' unless you want compatibility folding"
            )
        for name in ("min_chars", "min_words"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"data.clean.{name} must be >= 0, got {getattr(self, name)}; use 0 to turn "
                    "it off"
                )
        if self.dup_ngram_size < 1:
            raise ConfigError(
                f"data.clean.dup_ngram_size must be >= 1, got {self.dup_ngram_size}; 5 is usual"
            )
        for low, high in (("min_chars", "max_chars"), ("min_words", "max_words")):
            hi = getattr(self, high)
            if hi is not None and hi < getattr(self, low):
                raise ConfigError(
                    f"data.clean.{low} <= data.clean.{high} must hold, but got "
                    f"{low}={getattr(self, low)}, {high}={hi}; raise {high} or set it to null"
                )
        for name in ("max_dup_line_fraction", "max_dup_ngram_fraction", "min_alpha_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"data.clean.{name} must be in [0, 1] or null, got {value}; it is a share "
                    "of the document"
                )
        for pattern in self.drop_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"data.clean.drop_patterns has an invalid regular expression {pattern!r}: "
                    f"{exc}; fix or remove it"
                ) from None


@dataclass
class CleanResult:
    """Documents kept, one Removal per dropped document, and counts per step.

    counts has "input", "kept", one key per filter (documents removed), and for transforms
    the number of documents changed ("unicode_changed", "whitespace_changed",
    "control_changed") plus "control_chars_removed" (characters).
    """

    kept: list[Document]
    removed: list[Removal]
    counts: dict[str, int]


def clean(docs: Iterable[Document], options: CleanOptions = CleanOptions()) -> CleanResult:
    """Normalise every document and drop those failing a filter (see module docstring)."""
    patterns = [re.compile(p, re.MULTILINE) for p in options.drop_patterns]
    counts: Counter[str] = Counter({name: 0 for name in FILTERS})
    kept: list[Document] = []
    removed: list[Removal] = []
    for doc in docs:
        counts["input"] += 1
        text = transform(doc.text, options, counts)
        reason = first_failing_filter(text, options, patterns)
        if reason is not None:
            counts[reason] += 1
            removed.append(Removal.of(doc, reason))
            continue
        kept.append(doc if text == doc.text else replace(doc, text=text))
    counts["kept"] = len(kept)
    return CleanResult(kept=kept, removed=removed, counts=dict(counts))


def transform(text: str, options: CleanOptions, counts: Counter[str] | None = None) -> str:
    """Apply the enabled text transforms; count changed documents into `counts`."""
    counts = counts if counts is not None else Counter()
    if options.unicode_form is not None:
        new = unicodedata.normalize(options.unicode_form, text)
        counts["unicode_changed"] += new != text
        text = new
    if options.normalize_whitespace:
        new = normalize_whitespace(text)
        counts["whitespace_changed"] += new != text
        text = new
    if options.remove_control_chars:
        new = "".join(c for c in text if c in _KEEP_CONTROL or unicodedata.category(c) != "Cc")
        counts["control_changed"] += new != text
        counts["control_chars_removed"] += len(text) - len(new)
        text = new
    return text


def normalize_whitespace(text: str) -> str:
    """\\r\\n and \\r -> \\n, odd spaces -> space, no trailing spaces, at most one blank line
    in a row, no leading/trailing blank lines. Indentation is kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ODD_SPACE.sub(" ", text)
    text = _TRAILING.sub("", text)
    text = _BLANK_RUN.sub("\n\n", text)
    return text.strip("\n")


def first_failing_filter(
    text: str, options: CleanOptions, patterns: list[re.Pattern[str]] | None = None
) -> str | None:
    """The name of the first filter `text` fails, or None when it passes them all."""
    if not text.strip():
        return "empty"
    if len(text) < options.min_chars:
        return "min_chars"
    if options.max_chars is not None and len(text) > options.max_chars:
        return "max_chars"
    words = text.split()
    if len(words) < options.min_words:
        return "min_words"
    if options.max_words is not None and len(words) > options.max_words:
        return "max_words"
    if (
        options.max_dup_line_fraction is not None
        and dup_line_fraction(text) > options.max_dup_line_fraction
    ):
        return "dup_lines"
    if (
        options.max_dup_ngram_fraction is not None
        and dup_ngram_fraction(words, options.dup_ngram_size) > options.max_dup_ngram_fraction
    ):
        return "dup_ngrams"
    if options.min_alpha_fraction is not None and alpha_fraction(text) < options.min_alpha_fraction:
        return "min_alpha"
    if patterns is None:
        patterns = [re.compile(p, re.MULTILINE) for p in options.drop_patterns]
    if any(p.search(text) for p in patterns):
        return "drop_pattern"
    return None


def dup_line_fraction(text: str) -> float:
    """Share of non-empty lines that repeat an earlier line (0 for a single line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0
    return (len(lines) - len(set(lines))) / len(lines)


def dup_ngram_fraction(words: list[str], n: int) -> float:
    """Share of word n-gram occurrences whose n-gram occurs more than once in the document.

    A boilerplate-heavy or looping text ("buy now buy now ...") scores near 1; prose near 0.
    """
    if len(words) < n:
        return 0.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    repeated = sum(c for c in grams.values() if c > 1)
    return repeated / total


def alpha_fraction(text: str) -> float:
    """Share of alphabetic characters among non-whitespace characters (0 if there are none)."""
    visible = [c for c in text if not c.isspace()]
    if not visible:
        return 0.0
    return sum(c.isalpha() for c in visible) / len(visible)
