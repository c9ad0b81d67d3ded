"""File sources: JSONL, CSV, a glob of text files, a Hugging Face dataset saved to disk.

Every reader returns a `SourceResult`: the documents plus counts of what was read and what
was skipped (binary files, invalid UTF-8). Each Document's `source` is the file path and its
`position` names the file and line/row, so every later removal can be traced back.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.config import DataConfig
from genlab.data.documents import Document
from genlab.errors import DataError, require

_SURROGATE = re.compile("[\ud800-\udfff]")
_CSV_FIELD_LIMIT = 2**31 - 1  # the largest a C long holds on every platform
_HF_BATCH = 1000  # rows of a saved dataset read at a time


@dataclass
class SourceResult:
    """Documents read from one source, and counts (files, records, skipped ...)."""

    documents: list[Document] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def extend(self, other: SourceResult) -> None:
        self.documents.extend(other.documents)
        self.counts.update(other.counts)


def read_path(path: str | Path, options: DataConfig) -> SourceResult:
    """Read a file by its suffix: .jsonl/.ndjson, .csv/.tsv, anything else as one text doc."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(p, options)
    if suffix in (".csv", ".tsv"):
        return read_csv(p, options, delimiter="\t" if suffix == ".tsv" else ",")
    return read_text_files(str(p), options)


def read_jsonl(path: str | Path, options: DataConfig) -> SourceResult:
    """One document per JSON object line. Blank lines are ignored."""
    path = Path(path)
    result = SourceResult()
    raw = _read_bytes(path, result)
    if raw is not None:
        result.documents = list(iter_jsonl(raw, path, options, result.counts))
    return result


def iter_jsonl(
    raw: bytes, path: Path, options: DataConfig, counts: Counter[str], first_line: int = 1
) -> Iterator[Document]:
    """The documents of JSONL bytes (a whole file, or a slice of one starting at line
    `first_line`, cut at a line end), counting what was read and skipped into `counts`."""
    for lineno, line_bytes in enumerate(raw.splitlines(), start=first_line):
        if not line_bytes.strip():
            continue
        line = decode_utf8(line_bytes, options, counts)
        if line is None:
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise DataError(
                f"invalid JSON in {path} line {lineno}: {why}; each line of a .jsonl file "
                "must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path} line {lineno} is a JSON {type(record).__name__}, not an object; each "
                f"line must be an object with a {options.text_field!r} field"
            )
        counts["records"] += 1
        doc = _record_document(counts, record, list(record), options, path, f"{path}:line {lineno}")
        if doc is not None:
            yield doc


def read_csv(path: str | Path, options: DataConfig, delimiter: str = ",") -> SourceResult:
    """One document per CSV row (first row is the header). Quoted fields may span lines."""
    path = Path(path)
    result = SourceResult()
    raw = _read_bytes(path, result)
    if raw is not None:
        result.documents = list(iter_csv(raw, path, options, result.counts, delimiter))
    return result


def iter_csv(
    raw: bytes,
    path: Path,
    options: DataConfig,
    counts: Counter[str],
    delimiter: str = ",",
    *,
    header: list[str] | None = None,
    first_line: int = 1,
    first_row: int = 0,
) -> Iterator[Document]:
    """The documents of a CSV file's bytes, counting what was read and skipped: a whole
    file, or a piece of one cut at a record boundary (genlab.data.csv_plan) that starts at
    line `first_line` after `first_row` rows, with the file's `header`."""
    # Decode line by line so a bad byte costs only the row it is in, not the file.
    physical = raw.splitlines(keepends=True)
    bad_lines: set[int] = set()
    decoded: list[str] = []
    for i, chunk in enumerate(physical, start=1):
        try:
            decoded.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            bad_lines.add(i)
            decoded.append(chunk.decode("utf-8", errors="replace"))
    reader = csv_reader("".join(decoded), delimiter)
    del decoded
    line_offset = first_line - 1  # the reader counts this piece's lines from 1
    rows = _csv_rows(reader, path, line_offset)
    if header is None:
        try:
            header = next(rows)
        except StopIteration:
            return
        if bad_lines.intersection(range(1, reader.line_num + 1)):
            raise DataError(
                f"the header of {path} is not valid UTF-8; fix the file's encoding "
                "(save it as UTF-8)"
            )
        header = csv_header(header)
    needed = [f for f in (options.text_field, options.id_field, options.label_field) if f]
    next_line = reader.line_num + 1
    row_number = first_row
    for row in rows:
        lines = range(next_line, reader.line_num + 1)
        next_line = reader.line_num + 1
        if is_blank_row(row):
            continue
        row_number += 1
        if bad_lines.intersection(lines):
            if options.on_invalid_utf8 == "skip":
                counts["invalid_utf8_skipped"] += 1
                continue
            counts["invalid_utf8_replaced"] += 1
        counts["records"] += 1
        position = f"{path}:row {row_number} (line {lines.start + line_offset})"
        if len(row) < len(header):
            missing = [f for f in needed if f in header[len(row) :]]
            if missing:
                raise DataError(
                    f"{position} has {len(row)} field{'s' * (len(row) != 1)} but the header "
                    f"has {len(header)}; "
                    f"{missing[0]!r} is missing: fix the row (quote cells holding "
                    f"{delimiter!r}) or drop it"
                )
        record = dict(zip(header, row))
        doc = _record_document(counts, record, header, options, path, position)
        if doc is not None:
            yield doc


def csv_reader(text: str | Iterable[str], delimiter: str) -> Any:
    """The csv module's reader over `text` (or its physical lines, line ends kept), as
    genlab reads every CSV."""
    # A document may be long (a whole article in one cell): lift the csv module's 128 KiB
    # default cell limit; the real bound is the text, which is already in memory.
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    lines = io.StringIO(text, newline="") if isinstance(text, str) else text
    return csv.reader(lines, delimiter=delimiter)


def csv_header(row: list[str]) -> list[str]:
    """A CSV file's first row as its field names (Excel writes a byte-order mark first)."""
    return [h.lstrip("\ufeff") for h in row]


def is_blank_row(row: list[str]) -> bool:
    """A row genlab skips and does not number: every cell empty after strip()."""
    return not any(cell.strip() for cell in row)


def _csv_rows(reader: Any, path: Path, line_offset: int = 0) -> Iterator[list[str]]:
    """The reader's rows; a malformed file (csv.Error) is the user's to fix, one line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(
                f"{path} line {reader.line_num + line_offset} is not valid CSV "
                f"({str(exc)[:100]}); fix the quoting there, or convert the file to JSONL"
            ) from None
        yield row


def read_text_files(pattern: str, options: DataConfig) -> SourceResult:
    """Each file matching a glob pattern (or one file path) becomes one document.

    Patterns are relative to the current directory unless absolute; `**` recurses.
    """
    base = Path(pattern)
    if base.is_file():
        files = [base]
    elif base.is_dir():
        files = sorted(p for p in base.rglob("*") if p.is_file())
    else:
        anchor = Path(base.anchor) if base.is_absolute() else Path(".")
        rel = str(base.relative_to(anchor)) if base.is_absolute() else pattern
        files = sorted(p for p in anchor.glob(rel) if p.is_file())
    if not files:
        raise DataError(
            f"no files match {pattern!r}; check the path or glob pattern "
            "(use '**/*.txt' to search subdirectories)"
        )
    result = SourceResult()
    for file in files:
        raw = _read_bytes(file, result)
        if raw is None:
            continue
        text = decode_utf8(raw, options, result.counts)
        if text is None:
            continue
        result.counts["records"] += 1
        result.documents.append(
            Document(id=str(file), text=text, source=str(file), position=f"{file}:file")
        )
    result.counts["documents"] = len(result.documents)
    return result


def read_hf_dataset(
    path: str | Path, options: DataConfig, split: str | None = None
) -> SourceResult:
    """Rows of a Hugging Face dataset saved with `save_to_disk` (no network).

    For a DatasetDict, `split` picks one split; None reads every split in name order.
    """
    path = Path(path)
    result = SourceResult()
    for name, ds in hf_dataset_parts(path, options, split):
        result.documents.extend(iter_hf_rows(path, name, ds, options, result.counts))
    return result


def hf_dataset_parts(
    path: Path, options: DataConfig, split: str | None = None
) -> list[tuple[str, Any]]:
    """The (split name, Dataset) parts of a saved dataset, in reading order, each checked to
    have the configured fields ("" names a plain Dataset's one part). Memory-mapped: loading
    reads no rows."""
    datasets = require("datasets", "data")
    if not path.exists():
        raise DataError(
            f"dataset directory {path} does not exist; pass the directory "
            "written by Dataset.save_to_disk"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataError(
            f"{path} is not a saved Hugging Face dataset ({exc}); pass the "
            "directory written by Dataset.save_to_disk"
        ) from None
    if hasattr(loaded, "column_names") and isinstance(loaded.column_names, dict):
        names = sorted(loaded.keys())
        if split is not None and split not in names:
            raise DataError(f"split {split!r} not in {path}; available splits: {names}")
        parts = [(s, loaded[s]) for s in ([split] if split else names)]
    else:
        parts = [(split or "", loaded)]
    for name, ds in parts:
        _check_fields(list(ds.column_names), options, f"{path}[{name}]" if name else str(path))
    return parts


def iter_hf_rows(
    path: Path,
    name: str,
    ds: Any,
    options: DataConfig,
    counts: Counter[str],
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Document]:
    """The documents of rows [start, stop) of one part of a saved dataset (all by default),
    positioned by their row number in the part."""
    columns = list(ds.column_names)
    stop = len(ds) if stop is None else stop
    # A slice of rows at a time (columns of Python values): ~10x faster than row by row,
    # which formats a one-row table per row, and the same values.
    for first in range(start, stop, _HF_BATCH):
        batch = ds[first : min(stop, first + _HF_BATCH)]
        values = [batch[c] for c in columns]
        for i, row in enumerate(zip(*values), start=first):
            counts["records"] += 1
            where = f"{path}[{name}]:row {i}" if name else f"{path}:row {i}"
            doc = _record_document(counts, dict(zip(columns, row)), columns, options, path, where)
            if doc is not None:
                yield doc


# --- helpers -------------------------------------------------------------------------------


def _read_bytes(path: Path, result: SourceResult) -> bytes | None:
    """File bytes, or None (counted) for a binary file: a NUL byte never occurs in text."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check data.path")
    raw = path.read_bytes()
    result.counts["files"] += 1
    if b"\x00" in raw:
        result.counts["binary_skipped"] += 1
        return None
    return raw


def decode_utf8(raw: bytes, options: DataConfig, counts: Counter[str]) -> str | None:
    """`raw` as text under data.on_invalid_utf8 (None when the policy skips it), counted: the
    one decoding rule of every text reader (records, lines, whole files)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if options.on_invalid_utf8 == "skip":
            counts["invalid_utf8_skipped"] += 1
            return None
        counts["invalid_utf8_replaced"] += 1
        return raw.decode("utf-8", errors="replace")


def _check_fields(fields: Iterable[str], options: DataConfig, where: str) -> None:
    present = list(fields)
    for key, name in (
        ("text_field", options.text_field),
        ("label_field", options.label_field),
        ("id_field", options.id_field),
    ):
        if name is not None and name not in present:
            raise DataError(
                f"field {name!r} (data.{key}) not found in {where}; fields present: "
                f"{present}; set data.{key} to one of them"
            )


def _record_document(
    counts: Counter[str],
    record: dict[str, Any],
    fields: list[str],
    options: DataConfig,
    path: Path,
    position: str,
) -> Document | None:
    """The Document a record holds (None, counted, when its text is empty or it is skipped
    for a lone surrogate under on_invalid_utf8=skip)."""
    _check_fields(fields, options, position)
    text = record[options.text_field]
    if text is None or (isinstance(text, str) and not text):
        counts["empty_skipped"] += 1
        return None
    label = record.get(options.label_field) if options.label_field else None
    values = [
        text if isinstance(text, str) else str(text),
        str(record[options.id_field]) if options.id_field else position,
        None if label is None or label == "" else str(label),  # empty: no label
    ]
    # JSON may escape a lone UTF-16 surrogate ("\ud800"): a str Python holds but no UTF-8
    # can encode. It is invalid text like a bad byte, handled by the same policy.
    # (An ASCII str holds no surrogate, and str.isascii() is a flag lookup, not a scan.)
    if any(v is not None and not v.isascii() and _SURROGATE.search(v) for v in values):
        if options.on_invalid_utf8 == "skip":
            counts["invalid_utf8_skipped"] += 1
            return None
        counts["invalid_utf8_replaced"] += 1
        values = [v if v is None else _SURROGATE.sub("\ufffd", v) for v in values]
    counts["documents"] += 1
    return Document(
        id=values[1], text=values[0], source=str(path), position=position, label=values[2]
    )
