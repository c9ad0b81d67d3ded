"""Cutting one text file into pieces at paragraph breaks: reading the pieces one by one (as
workers do) gives the paragraphs, ids and positions of reading the file whole."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from genlab import config
from genlab.data import text_plan
from genlab.data.corpus import paragraph_documents, read_paragraphs
from genlab.data.text_plan import plan_paragraphs

# Paragraph breaks of every shape: LF and CRLF, runs with spaces, tabs and Unicode whitespace
# inside (U+3000, no-break space, U+001C), long runs, paragraphs that start with ASCII or
# Unicode whitespace (no cut may go there) or with letters of other scripts or a typographic
# quote (cuts may), lines broken inside paragraphs, empty lines at the start and the end.
SHAPES = ["\n\n", "\r\n\r\n", "\n \n", "\n\t\n\n", "\n\u3000\n", "\n\u00a0\n", "\n\x1c\n",
          "\n\n\n\n\n", " \n\n  "]  # fmt: skip
STARTS = ["", "", " ", "\u00e9t\u00e9 ", "\t", "\u4e2d\u6587 ", "\u3053\u3093 ", "\u201cquoted ",
          "\u041f\u0440\u0438 ", "\u3000", "\u00a0", "\u2003", "\u0085"]  # fmt: skip


def _text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    parts = ["\n\n"]
    for i in range(n):
        lines = [" ".join(rng.choice(["word", "text", "x"]) for _ in range(rng.randint(1, 9)))
                 for _ in range(rng.randint(1, 3))]  # fmt: skip
        parts.append(rng.choice(STARTS) + f"p{i} " + "\n".join(lines))
        parts.append(rng.choice(SHAPES))
    return "".join(parts) + "\n"


def _read_pieces(path, pieces):
    data = path.read_bytes()
    docs, counts = [], Counter()
    for p in pieces:
        text = data[p.start : p.end].decode("utf-8", errors="replace")
        docs += paragraph_documents(text, path, counts, first_index=p.first_index)
    return docs, counts


@pytest.mark.parametrize("piece_bytes", [1, 50, 300])
@pytest.mark.parametrize("seed", [0, 1])
def test_pieces_read_as_the_whole_file_does(tmp_path, monkeypatch, piece_bytes, seed):
    monkeypatch.setattr(text_plan, "_WINDOW", 7)  # a break found across several reads
    path = tmp_path / "corpus.txt"
    path.write_bytes(_text(300, seed).encode("utf-8"))
    whole = read_paragraphs(path, config.load(None, []).data)
    plan = plan_paragraphs(path, piece_bytes)
    pieces = plan.pieces
    assert len(pieces) > 5 and not plan.invalid_utf8
    assert pieces[0].start == 0 and pieces[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in itertools.pairwise(pieces))
    docs, counts = _read_pieces(path, pieces)
    assert docs == whole.documents
    assert counts["records"] == whole.counts["records"]
    reference = [(f"corpus.txt#{i}", p.strip("\n")) for i, p in enumerate(_split(path))]
    assert [(d.id, d.text) for d in docs] == [r for r in reference if r[1].strip()]


def _split(path):
    """Paragraph numbers by hand: every maximal whitespace run holding >= 2 line breaks
    ends a paragraph (an independent reading of the rule)."""
    text, parts, current, run = path.read_bytes().decode("utf-8"), [], [], []
    for ch in text:
        if ch.isspace():
            run.append(ch)
            continue
        if run.count("\n") >= 2:
            first, last = run.index("\n"), len(run) - 1 - run[::-1].index("\n")
            current += run[:first]
            parts.append("".join(current))
            current = run[last + 1 :]
        else:
            current += run
        run = []
        current.append(ch)
    if run.count("\n") >= 2:
        parts.append("".join(current + run[: run.index("\n")]))
        current = run[len(run) - run[::-1].index("\n") :]
    else:
        current += run
    parts.append("".join(current))
    return parts


def test_invalid_utf8_is_replaced_in_the_pieces_as_in_the_whole_file(tmp_path):
    """Bad bytes anywhere, also right after a break and as a cut-off multi-byte character:
    the pieces decode with replacement characters to the whole file's paragraphs."""
    bad = tmp_path / "bad.txt"
    junk = [b"broken \xff byte", b"\xc3(after a break", b"cut \xe4\xb8", b"\xe3\x80 half space"]
    body = b"".join(_text(20, i).encode() + b"\n\n" + j + b"\n\n" for i, j in enumerate(junk))
    bad.write_bytes(body)
    plan = plan_paragraphs(bad, 100)
    assert plan.invalid_utf8 and len(plan.pieces) > 5
    whole = read_paragraphs(bad, config.load(None, ["data.on_invalid_utf8=replace"]).data)
    docs, _ = _read_pieces(bad, plan.pieces)
    assert docs == whole.documents
    assert whole.counts["invalid_utf8_replaced"] == 1


def test_a_nul_keeps_the_file_whole(tmp_path):
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"head \x00\n\n" + _text(50, 0).encode())
    assert plan_paragraphs(nul, 100) is None


def test_a_file_without_breaks_is_one_piece(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("one long paragraph " * 500 + "\n")
    pieces = plan_paragraphs(path, 100).pieces
    assert [(p.start, p.end) for p in pieces] == [(0, path.stat().st_size)]


def test_a_cut_goes_before_any_character_but_whitespace():
    """The byte pattern that ends a piece accepts exactly the code points str.isspace()
    rejects (DEL aside: no cut before it, which is only ever safe)."""
    wrong = []
    for cp in range(0x21, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        found = text_plan._CUT.search(("\n\n" + chr(cp)).encode("utf-8")) is not None
        if found == chr(cp).isspace() and cp != 0x7F:
            wrong.append(hex(cp))
    assert not wrong
