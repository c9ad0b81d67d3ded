"""Cutting one CSV file into pieces at record ends: each piece starts where the csv module,
reading the whole file, starts a record, on the same line and after the same rows; files
whose quotes csv reads literally stay whole."""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest

from genlab import config
from genlab.data import csv_plan
from genlab.data.csv_plan import plan_csv
from genlab.data.tabular import iter_csv, read_csv

# Every kind of record boundary and blank row the reader meets: CRLF and bare CR line ends,
# quoted cells spanning lines (LF, CRLF and CR inside), doubled quotes, rows that are blank
# (empty line, delimiters only, quoted empty cells, whitespace incl. Unicode, long runs of
# spaces) or only look blank (a cell holding one quote, text after a long run of spaces), a
# byte-order mark, non-ASCII text, no final line break.
TRICKY = (
    "\ufeffid,text\r\n"
    'a,"first line\nsecond line"\r\n'
    "b,plain words here\n"
    "\n"
    ",,\n"
    '"",""\n'
    " ,\t\n"
    'c,"she said ""hi"", then left"\n'
    '"d","x\r\ny\rz"\r'
    "e,caf\u00e9 na\u00efve \u65e5\u672c\u8a9e\n"
    "\u3000,\u00a0\n"
    '"""",\n'
    "                    ,text after twenty spaces\n"
    "                                        ,                    \n"
    'f,"multi\n\nparagraph\n\ncell"\n'
    "g,last row without a line break"
)


def _records_whole(data: bytes, delimiter: str = ",") -> list[tuple[int, int, bool]]:
    """(byte offset, line, blank) where each record starts, from csv itself: the file is fed
    to csv.reader one physical line at a time, so the bytes consumed before each row are
    known exactly (an independent derivation of what plan_csv computes with numpy)."""
    lines = data.splitlines(keepends=True)
    consumed = [0]

    def feed():
        for line in lines:
            consumed[0] += len(line)
            yield line.decode("utf-8", errors="replace")

    reader = csv.reader(feed(), delimiter=delimiter)
    starts, offset, line = [], 0, 1
    for row in reader:
        starts.append((offset, line, not any(c.strip() for c in row)))
        offset, line = consumed[0], reader.line_num + 1
    return starts


def _check_pieces(path, data: bytes, plan) -> None:
    records = _records_whole(data)
    by_offset = {off: (line, i) for i, (off, line, _) in enumerate(records)}
    assert plan.pieces[0].start == 0 and plan.pieces[-1].end == len(data)
    for before, after in zip(plan.pieces, plan.pieces[1:]):
        assert before.end == after.start
    for piece in plan.pieces:
        assert piece.start in by_offset, piece  # a record starts here
        line, index = by_offset[piece.start]
        assert piece.first_line == line
        rows = sum(1 for _, _, blank in records[1:index] if not blank)
        assert piece.rows_before == rows, piece


@pytest.mark.parametrize("scan_bytes", [1, 7, 4096])
@pytest.mark.parametrize("piece_bytes", [1, 20, 64])
def test_pieces_start_where_csv_starts_a_record(tmp_path, monkeypatch, scan_bytes, piece_bytes):
    monkeypatch.setattr(csv_plan, "SCAN_BYTES", scan_bytes)  # state carried across blocks
    data = TRICKY.encode("utf-8")
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    plan = plan_csv(path, ",", piece_bytes)
    assert plan is not None and plan != "binary"
    assert len(plan.pieces) >= 3
    assert plan.header == ["id", "text"]
    _check_pieces(path, data, plan)


def test_pieces_read_as_the_whole_file_does(tmp_path):
    """Reading the pieces one by one (as workers do) gives the documents, ids, positions and
    counts of reading the file whole."""
    path = tmp_path / "t.csv"
    path.write_bytes(TRICKY.encode("utf-8") + b"\nh,bad byte \xff here\n")
    cfg = config.load(None, ["data.id_field=id", "data.on_invalid_utf8=replace"]).data
    whole = read_csv(path, cfg)
    plan = plan_csv(path, ",", 30)
    docs, counts = _read(path, plan, cfg)
    assert docs == whole.documents
    assert counts == whole.counts
    assert {d.id for d in docs} >= {"a", "g", "h"}
    assert len(plan.pieces) > 3


def test_a_large_generated_file_is_cut_as_csv_reads_it(tmp_path):
    """Many records of random shapes, scanned in small blocks."""
    import random

    rng = random.Random(0)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=rng.choice(["\n", "\r\n"]))
    writer.writerow(["id", "text"])
    pieces = ["word", "two words", "comma, inside", 'a "quote"', "line\nbreak", "\r\n", " ", ""]
    for i in range(2000):
        if rng.random() < 0.05:
            out.write(rng.choice(["\n", ",\n", '"",""\n']))
            continue
        writer.writerow([f"r{i}", " ".join(rng.choices(pieces, k=rng.randint(1, 6)))])
    data = out.getvalue().encode()
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    plan = plan_csv(path, ",", 997)
    assert len(plan.pieces) > 20
    _check_pieces(path, data, plan)


@pytest.mark.parametrize(
    "body",
    [
        'a,say "hi" to them\n',  # a quote inside an unquoted cell: csv keeps it literally
        'a, "spaced"\n',  # a quote after a space opens nothing in csv
        'a,"closed"early\n',  # text after a closing quote
        'a,"never closed\n',  # an unclosed quoted cell runs to the end of the file
    ],
)
@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_a_file_with_quotes_csv_reads_literally_is_cut_by_csv_itself(
    tmp_path, monkeypatch, body, line_end
):
    """The fast scan gives up on these; csv reads the file once to find the record ends
    (blocks of 7 bytes here: a CRLF may be cut in two), and the pieces read as the whole."""
    monkeypatch.setattr(csv_plan, "SCAN_BYTES", 7)
    rows = ["id,text", *(f"x{i},filler text" for i in range(30)), ",,", body.rstrip("\n"),
            *(f"y{i},more" for i in range(30))]  # fmt: skip
    path = tmp_path / "q.csv"
    path.write_bytes(line_end.join(rows).encode() + line_end.encode())
    plan = plan_csv(path, ",", 64)
    assert plan is not None and len(plan.pieces) > 5
    assert plan.header == ["id", "text"]
    cfg = config.load(None, ["data.id_field=id"]).data
    docs, counts = _read(path, plan, cfg)
    whole = read_csv(path, cfg)
    assert docs == whole.documents
    assert counts == whole.counts


def _read(path, plan, cfg):
    """The documents and counts of reading `plan`'s pieces one by one, as workers do."""
    data = path.read_bytes()
    docs, counts = [], Counter(files=1)  # the planner counts the file (genlab.data.shards)
    for p in plan.pieces:
        header = None if p.start == 0 else plan.header
        docs += iter_csv(data[p.start : p.end], path, cfg, counts, header=header,
                         first_line=p.first_line, first_row=p.rows_before)  # fmt: skip
    return docs, counts


def test_csv_reading_plans_what_the_fast_scan_plans(tmp_path):
    """On a file both can follow, the pieces csv's own reading finds are the scan's."""
    data = TRICKY.encode("utf-8")
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    for size in (1, 20, 64):
        assert csv_plan.plan_by_reading(path, ",", size) == plan_csv(path, ",", size)


def test_a_nul_byte_marks_the_file_binary(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(b"id,text\n" + b"x,filler\n" * 100 + b"\x00\x01")
    assert plan_csv(path, ",", 64) == "binary"


def test_tsv_cuts_at_tabs_not_commas(tmp_path):
    data = "id\ttext\n" + "".join(f'r{i}\t"a, b\tc\nd"\n' for i in range(100))
    path = tmp_path / "t.tsv"
    path.write_text(data, newline="")
    plan = plan_csv(path, "\t", 50)
    assert len(plan.pieces) > 10
    records = _records_whole(data.encode(), "\t")
    starts = {off for off, _, _ in records}
    assert all(p.start in starts for p in plan.pieces)
