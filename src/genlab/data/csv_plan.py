"""Cut one CSV/TSV file into byte ranges that start and end at record boundaries, so that
workers read a large file in parallel and in bounded memory (genlab.data.shards).

A record ends at a line break outside a quoted cell, and whether a byte is inside quotes is
the parity of the quote characters before it. That is exact for a file whose quotes all
follow RFC 4180 (a quote opens a cell right after a delimiter or a line break, closes it
right before one, or is doubled inside it), which this module checks for every quote while
it scans. A file with any other quote (a stray one in an unquoted cell, which Python's csv
reads as a literal character) is planned by reading it through csv once instead
(`plan_by_reading`: exact for anything csv reads, but ~7 ms/MB in one process). Each piece
carries the line and row it starts at and the file's header, so every document keeps the id
and position it has when the file is read whole.

The scan is vectorised (numpy over the positions of quotes and line breaks in blocks of
SCAN_BYTES, ~1.5 ms/MB here) and holds one block at a time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genlab.data.tabular import csv_header, csv_reader, is_blank_row

SCAN_BYTES = 4 << 20  # bytes per numpy block: a few of these arrays at a time
_HEAD = 16  # bytes of each record looked at first to tell it is not blank
MAX_UNSURE = 10_000  # records only csv can tell blank or not; more: csv plans the file

_QUOTE, _LF, _CR, _NUL = 34, 10, 13, 0
# What a byte says about whether the record holding it is blank (the csv reader yields it
# but genlab skips it: every cell empty after str.strip()): 0 blank-safe (ASCII whitespace,
# the delimiter), 1 unsure (a quote: `""""` is a cell holding a quote; a UTF-8 byte that may
# belong to Unicode whitespace: the lead bytes C2/E1/E2/E3 and continuation bytes), 2 not
# blank (anything else).
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_MAYBE_SPACE_UTF8 = bytes([0xC2, 0xE1, 0xE2, 0xE3, *range(0x80, 0xC0)])


@dataclass(frozen=True)
class CsvPiece:
    start: int  # byte offset of the piece's first record
    end: int  # byte offset just past its last record's line break (or the file's end)
    first_line: int  # the line (1-based, as csv counts them) the piece starts on
    rows_before: int  # non-blank records before the piece, the header not counted


@dataclass
class CsvPlan:
    pieces: list[CsvPiece]
    header: list[str]  # the first record's cells, as iter_csv reads them


def _byte_classes(delimiter: int) -> np.ndarray:
    table = np.full(256, 2, dtype=np.uint8)
    table[list(_ASCII_SPACE)] = 0
    table[delimiter] = 0
    table[list(_MAYBE_SPACE_UTF8)] = 1
    table[_QUOTE] = 1
    return table


class _Scanner:
    """The state carried from one block to the next, and what the scan found. A block is
    scanned through the positions of its quotes and line breaks (a few per record), never
    byte by byte: numpy finds them, the rest works on those short arrays."""

    def __init__(self, delimiter: str, piece_bytes: int):
        self.delim = ord(delimiter)
        self.classes = _byte_classes(self.delim)
        self.piece_bytes = piece_bytes
        self.base = 0  # offset of the current block's first byte
        self.inside = 0  # 1: the block starts inside a quoted cell
        self.prev = _LF  # the byte before the block (the file's start reads as a line break)
        self.lines = 0  # line breaks before the block
        self.records = 0  # records ended before the block
        self.record_start = 0  # offset of the record the block starts in
        self.record_class = 0  # the highest byte class of that record so far
        self.blank = 0  # records ended so far that are surely blank (the header never is)
        self.unsure: list[tuple[int, int, int]] = []  # (start, end, record index)
        # (offset, line breaks before it, records before it, surely blank records before it)
        self.cuts: list[tuple[int, int, int, int]] = []
        self.header_end = 0
        self.valid = True

    def block(self, a: np.ndarray, n: int) -> None:
        """Scan a[:n] (uint8); a[n], when there, is the byte after it (a is one byte longer
        than the block except at the file's end)."""
        body = a[:n]
        quotes = np.flatnonzero(body == _QUOTE)
        lf = np.flatnonzero(body == _LF)
        cr = np.flatnonzero(body == _CR)
        if cr.size:  # CR ends a line unless LF follows (CRLF ends it at the LF)
            cr = cr[self._after(a, cr) != _LF]
            breaks = np.union1d(lf, cr)  # sorted, as csv and io count lines
        else:
            breaks = lf
        closing = ((np.arange(quotes.size) + self.inside) & 1).astype(bool)
        if quotes.size and not self._quotes_are_rfc4180(a, quotes, closing):
            self.valid = False
            return
        # A line break is inside a quoted cell when an odd number of quotes precede it.
        inside = (np.searchsorted(quotes, breaks) + self.inside) & 1
        ends = breaks[inside == 0]  # each record's last byte
        if ends.size:
            self._records(a, n, ends, breaks)
        elif self.record_class < 2:
            self.record_class = max(self.record_class, self._highest(a, 0, n - 1))
        self.lines += breaks.size
        self.base += n
        self.inside = (self.inside + quotes.size) & 1
        self.prev = int(a[n - 1])

    @staticmethod
    def _after(a: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The byte after each position, -1 after the file's last byte."""
        out = np.full(positions.size, -1, dtype=np.int16)
        has = positions + 1 < a.size
        out[has] = a[positions[has] + 1]
        return out

    def _quotes_are_rfc4180(self, a: np.ndarray, quotes: np.ndarray, closing: np.ndarray) -> bool:
        """Whether every quote opens a cell (after a delimiter, a line break or the file's
        start), closes one (before a delimiter, a line break or the file's end), or is one
        of a doubled pair: then quote parity is exactly csv's quoted state."""
        prev = np.where(quotes > 0, a[np.maximum(quotes - 1, 0)], self.prev)
        after = self._after(a, quotes)
        bounds = (self.delim, _LF, _CR, _QUOTE)
        ok_open = np.isin(prev, bounds)
        ok_close = np.isin(after, bounds) | (after == -1)
        return bool(np.all(np.where(closing, ok_close, ok_open)))

    def _highest(self, a: np.ndarray, first: int, last: int) -> int:
        """The highest byte class in a[first:last + 1]; most text shows a class-2 byte in
        its first bytes, so those are looked at before the rest."""
        head = int(self.classes[a[first : min(last, first + _HEAD) + 1]].max(initial=0))
        if head == 2 or last - first < _HEAD:
            return head
        return max(head, int(self.classes[a[first : last + 1]].max()))

    def _records(self, a: np.ndarray, n: int, ends: np.ndarray, breaks: np.ndarray) -> None:
        """Account for the records ending in block a[:n] at `ends` (block offsets)."""
        starts = np.concatenate(([0], ends[:-1] + 1))
        # Each record's highest class from its first _HEAD bytes, (records, _HEAD) at once
        # (past its end the index stays on its last byte, a line break: class 0) ...
        at = np.minimum(starts[:, None] + np.arange(_HEAD), ends[:, None])
        highest = self.classes[a[at]].max(axis=1)
        # ... and from all of it where those say blank and there is more.
        for k in np.flatnonzero((highest < 2) & (ends - starts >= _HEAD)).tolist():
            highest[k] = self._highest(a, int(starts[k]), int(ends[k]))
        highest[0] = max(int(highest[0]), self.record_class)
        index = self.records + np.arange(ends.size)  # global record numbers
        if self.records == 0:
            self.header_end = self.base + int(ends[0]) + 1
        counted = index > 0  # the header is no row: never skipped as blank
        sure_upto = np.cumsum((highest == 0) & counted)
        for k in np.flatnonzero((highest == 1) & counted).tolist():
            start = self.record_start if k == 0 else self.base + int(starts[k])
            self.unsure.append((start, self.base + int(ends[k]) + 1, int(index[k])))
        last = self.cuts[-1][0] if self.cuts else 0
        while True:  # cut after the first record end at least piece_bytes past the last cut
            k = int(np.searchsorted(ends, last + self.piece_bytes - 1 - self.base))
            if k >= ends.size:
                break
            last = self.base + int(ends[k]) + 1
            lines = self.lines + int(np.searchsorted(breaks, ends[k], side="right"))
            self.cuts.append((last, lines, int(index[k]) + 1, self.blank + int(sure_upto[k])))
        self.blank += int(sure_upto[-1])
        self.records += ends.size
        self.record_start = self.base + int(ends[-1]) + 1
        tail = int(ends[-1]) + 1  # the record the next block continues starts here
        self.record_class = self._highest(a, tail, n - 1) if tail < n else 0


def plan_csv(path: Path, delimiter: str, piece_bytes: int) -> CsvPlan | str | None:
    """The pieces of `path` (one or more); "binary" for a file holding a NUL byte (skipped,
    as the reader skips it); None where the file must be read whole (csv cannot read it).
    A file the fast scan cannot follow (a quote csv reads literally, an unclosed quoted
    cell, too many records whose blankness only csv can tell) is planned by csv itself."""
    scan = _Scanner(delimiter, piece_bytes)
    with open(path, "rb") as f:
        held = b""  # the last byte read: scanned with the next block (it needs its successor)
        while True:
            data = held + f.read(SCAN_BYTES)
            at_end = len(data) == len(held)
            n = len(data) if at_end else len(data) - 1
            held = b"" if at_end else data[-1:]
            if n:
                if b"\x00" in data[:n]:  # a NUL byte never occurs in text: skip the file
                    return "binary"
                scan.block(np.frombuffer(data, dtype=np.uint8), n)
                if not scan.valid:
                    return plan_by_reading(path, delimiter, piece_bytes)
            if at_end:
                break
    if scan.inside or len(scan.unsure) > MAX_UNSURE:
        return plan_by_reading(path, delimiter, piece_bytes)
    return _plan(path, delimiter, scan)


def plan_by_reading(path: Path, delimiter: str, piece_bytes: int) -> CsvPlan | str | None:
    """The pieces of `path` as csv itself reads it: one pass through the csv module in this
    process (~7 ms/MB, serial), fed one physical line at a time so the bytes behind every
    row are known. Exact for any file csv reads; memory holds one block of lines. "binary"
    for a NUL byte; None when csv cannot read the file (the reader then says why)."""
    consumed = [0, False]  # bytes fed to csv so far; a NUL seen

    def lines() -> Iterator[str]:
        with open(path, "rb") as f:
            held = b""
            for block in iter(lambda: f.read(SCAN_BYTES), b""):
                if b"\x00" in block:
                    consumed[1] = True
                    return
                parts = (held + block).splitlines(keepends=True)
                # The last line may go on in the next block (a CR may be a CRLF's half).
                held = b"" if parts[-1].endswith(b"\n") else parts.pop()
                for line in parts:
                    consumed[0] += len(line)
                    yield line.decode("utf-8", errors="replace")
            if held:
                consumed[0] += len(held)
                yield held.decode("utf-8", errors="replace")

    reader = csv_reader(lines(), delimiter)
    pieces: list[CsvPiece] = []
    header: list[str] | None = None
    rows = 0  # non-blank rows so far, the header not counted
    start, first_line, rows_before = 0, 1, 0  # the piece being read
    try:
        for row in reader:
            if header is None:
                header = csv_header(row)
            elif not is_blank_row(row):
                rows += 1
            if consumed[0] - start >= piece_bytes:  # a record ends here: so may a piece
                pieces.append(CsvPiece(start, consumed[0], first_line, rows_before))
                start, first_line, rows_before = consumed[0], reader.line_num + 1, rows
    except csv.Error:
        return None
    if consumed[1]:
        return "binary"
    if start < consumed[0] or not pieces:
        pieces.append(CsvPiece(start, consumed[0], first_line, rows_before))
    return CsvPlan(pieces, header or [])


def _plan(path: Path, delimiter: str, scan: _Scanner) -> CsvPlan:
    blank_unsure = []  # record numbers of the unsure records that csv reads as blank
    with open(path, "rb") as f:
        for start, end, index in scan.unsure:
            f.seek(start)
            if _is_blank(f.read(end - start), delimiter):
                blank_unsure.append(index)
        f.seek(0)
        header = csv_header(_cells(f.read(scan.header_end), delimiter))
    pieces, start, first_line, rows = [], 0, 1, 0
    for offset, lines, records, blank in scan.cuts:
        if offset >= scan.base:  # a cut at the very end starts nothing
            break
        pieces.append(CsvPiece(start, offset, first_line, rows))
        blank += int(np.searchsorted(np.asarray(blank_unsure, np.int64), records))
        start, first_line, rows = offset, lines + 1, records - 1 - blank
    pieces.append(CsvPiece(start, scan.base, first_line, rows))
    return CsvPlan(pieces, header)


def _cells(record: bytes, delimiter: str) -> list[str]:
    """One record's cells, decoded as iter_csv decodes (a bad byte replaced)."""
    return next(csv_reader(record.decode("utf-8", errors="replace"), delimiter), [])


def _is_blank(record: bytes, delimiter: str) -> bool:
    return is_blank_row(_cells(record, delimiter))
