"""Cut one plain-text file (a source read as paragraphs) into byte ranges at paragraph
breaks, so that workers read a large file in parallel and in bounded memory
(genlab.data.shards).

A paragraph break is a run of whitespace holding two line breaks or more
(`corpus.PARAGRAPH_BREAK`). A piece ends right after one whose next character is not
whitespace, so the run cannot go on into the next piece: splitting each piece alone gives
the whole file's paragraphs, plus an empty one at the end of each piece but the last
(skipped, as the whole file's empty ones are). Each piece carries the number of its first
paragraph, counted with the same pattern over the pieces before it, so every document keeps
the id and position it has when the file is read whole. A file with a NUL byte near its
start, or invalid UTF-8 under data.on_invalid_utf8=skip, stays whole (the reader's own
errors then apply); under `replace` its pieces decode with replacement characters and the
file counts once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from genlab.data.corpus import PARAGRAPH_BREAK

_WINDOW = 1 << 20  # bytes read at a time while looking for the next break
# A paragraph break of ASCII whitespace that ends before a character that is not whitespace
# (`\s` in a str pattern): printable ASCII, or the UTF-8 of a character outside the few
# Unicode spaces — U+0085 and U+00A0 (C2 85/A0), U+1680 (E1 9A 80), U+2000-200A, U+2028/9,
# U+202F (E2 80 ..), U+205F (E2 81 9F), U+3000 (E3 80 80) — so that text in other scripts,
# and paragraphs opening with a typographic quote, can be cut too.
_NOT_SPACE = (
    rb"[!-~\xc3-\xdf\xe0\xe4-\xf4]"
    rb"|\xc2(?![\x85\xa0])"
    rb"|\xe1(?!\x9a\x80)"
    rb"|\xe2(?!\x80[\x80-\x8a\xa8\xa9\xaf]|\x81\x9f)"
    rb"|\xe3(?!\x80\x80)"
)
_CUT = re.compile(rb"\n[\t\n\x0b\x0c\r\x1c-\x1f ]*\n(?=" + _NOT_SPACE + rb")")
_BINARY_PROBE = 8192  # the whole-file reader looks for NUL bytes in this many first bytes


@dataclass(frozen=True)
class TextPiece:
    start: int
    end: int
    first_index: int  # the number of the piece's first paragraph in the whole file


@dataclass
class TextPlan:
    pieces: list[TextPiece] = field(default_factory=list)
    invalid_utf8: bool = False  # some piece is not UTF-8 (each decodes with replacements)


def plan_paragraphs(path: Path, piece_bytes: int) -> TextPlan | None:
    """Pieces of about `piece_bytes` (the last may be shorter, one may be longer where no
    break comes sooner), or None where the file is read whole (a NUL byte near its start:
    the reader's own check). Invalid UTF-8 is decoded with replacement characters, as the
    whole file would be: a cut follows an ASCII line break, where decoding starts afresh."""
    plan = TextPlan()
    start, index = 0, 0
    with open(path, "rb") as f:
        if b"\x00" in f.read(_BINARY_PROBE):
            return None
        f.seek(0)
        held, at_end = b"", False  # held: bytes from `start` on, read but not yet cut
        while True:
            while len(held) < piece_bytes and not at_end:
                more = f.read(piece_bytes - len(held))
                at_end = not more
                held += more
            while True:
                # From a little before the target: a break may begin just before it.
                match = _CUT.search(held, max(0, piece_bytes - 64))
                if match is not None or at_end:
                    cut = match.end() if match is not None else len(held)
                    break
                more = f.read(_WINDOW)
                at_end = not more
                held += more
            piece, held = held[:cut], held[cut:]
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError:
                plan.invalid_utf8 = True
                text = piece.decode("utf-8", errors="replace")
            plan.pieces.append(TextPiece(start, start + cut, index))
            index += sum(1 for _ in PARAGRAPH_BREAK.finditer(text))
            start += cut
            if not held and at_end:
                return plan
