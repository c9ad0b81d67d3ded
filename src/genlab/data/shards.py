"""A source cut into shards: the unit of work of the streaming preparation.

A shard is a piece of `data.source` that one worker reads on its own: a byte range of a
JSONL file cut at a line end (with the line number it starts at, so positions and ids stay
those of the whole file), a byte range of a CSV/TSV file cut at a record end (with its line,
its row number and the file's header; genlab.data.csv_plan finds where quoted cells end), a
byte range of a single text file read as paragraphs, cut at a paragraph break (with the
number of its first paragraph; genlab.data.text_plan), a range of rows of one split of a
saved Hugging Face dataset (memory-mapped: each worker loads it and reads its rows), a group
of text files, or a source that is read whole (a built-in corpus, a CSV, text file or saved
dataset no larger than one shard, a text file with invalid UTF-8, a CSV csv cannot read).
`read_shard` yields its documents in corpus order; the shards in plan order are the corpus.

Planning reads each JSONL file and each larger CSV or single text file once (to find line,
record or paragraph ends, count lines or paragraphs and see NUL bytes, which mark a binary
file to skip whole, as the one-file reader does); it holds about one shard at a time.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.config import DataConfig
from genlab.data.corpus import (
    RECORD_SUFFIXES,
    SourceSpec,
    paragraph_documents,
    read_paragraphs,
    read_whole_file,
)
from genlab.data.csv_plan import plan_csv
from genlab.data.documents import Document
from genlab.data.sources import builtin_documents
from genlab.data.tabular import (
    hf_dataset_parts,
    iter_csv,
    iter_hf_rows,
    iter_jsonl,
    read_hf_dataset,
    read_path,
)
from genlab.data.text_plan import plan_paragraphs


def shard_size(cfg: DataConfig) -> int:
    """data.shard_mb in bytes (16 MB by default: enough work per task, little memory per
    worker; the prepared dataset does not depend on it)."""
    return max(1, int(cfg.shard_mb * 2**20))


_JSONL = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Shard:
    """One worker's piece of the source (see the module docstring)."""

    kind: str  # jsonl | csv | records | text | paragraphs | paragraph_range | builtin | hf
    paths: tuple[str, ...] = ()
    start: int = 0
    end: int = 0
    first_line: int = 1
    root: str | None = None
    # csv: the rows before this piece (its first is row before + 1); paragraph_range: the
    # number of its first paragraph (paragraphs are numbered from 0)
    before: int = 0
    part: str | None = None  # hf: the rows [start, end) of this split ("": a plain Dataset)
    header: tuple[str, ...] | None = None  # csv: the file's header (None: the piece has it)


def plan_shards(
    cfg: DataConfig, spec: SourceSpec, shard_bytes: int
) -> tuple[list[Shard], Counter[str]]:
    """The shards of `spec` in corpus order, and the counts planning already knows (JSONL
    files seen and skipped as binary)."""
    counts: Counter[str] = Counter()
    whole = _read_whole(spec)
    if whole == "builtin":
        return [Shard("builtin", (cfg.source,))], counts
    if whole == "hf":
        return _hf_shards(Path(str(spec.root)), cfg, shard_bytes), counts
    if whole == "paragraphs":
        return _paragraph_shards(spec.files[0], cfg, shard_bytes, counts), counts
    root = None if spec.root is None else str(spec.root)
    shards: list[Shard] = []
    texts: list[str] = []
    text_bytes = 0
    for file in spec.files:
        suffix = file.suffix.lower()
        if suffix not in RECORD_SUFFIXES:
            texts.append(str(file))
            text_bytes += file.stat().st_size
            if text_bytes >= shard_bytes:
                shards.append(Shard("text", tuple(texts), root=root))
                texts, text_bytes = [], 0
            continue
        if texts:  # keep corpus order: the text files before this record file
            shards.append(Shard("text", tuple(texts), root=root))
            texts, text_bytes = [], 0
        if suffix in _JSONL:
            shards.extend(_jsonl_shards(file, shard_bytes, counts))
        else:
            shards.extend(_csv_shards(file, shard_bytes, counts))
    if texts:
        shards.append(Shard("text", tuple(texts), root=root))
    return shards, counts


def _read_whole(spec: SourceSpec) -> str | None:
    """The kind of a source planned as one whole (a built-in corpus; a Hugging Face dataset
    or one plain-text file of paragraphs, cut into row ranges or at paragraph breaks when
    large), or None for a source cut into shards file by file."""
    if spec.kind in ("builtin", "hf"):
        return spec.kind
    if spec.kind == "file" and spec.files[0].suffix.lower() not in RECORD_SUFFIXES:
        return "paragraphs"
    return None


def likely_several(spec: SourceSpec, shard_bytes: int) -> bool:
    """Whether plan_shards will likely cut `spec` into several shards, from file sizes alone
    (nothing read): a source not read whole, holding more than one shard's bytes. (Wrong
    only for a large file read whole after all: a CSV csv cannot read, a text file with a
    NUL byte, or invalid UTF-8 under data.on_invalid_utf8=skip.)"""
    whole = _read_whole(spec)
    if whole == "builtin":
        return False
    total = 0
    for path in spec.files:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
        if total > shard_bytes:
            return True
    return False


def _jsonl_shards(path: Path, shard_bytes: int, counts: Counter[str]) -> list[Shard]:
    """Byte ranges of about `shard_bytes`, each ending after a newline (or at the end)."""
    counts["files"] += 1
    shards: list[Shard] = []
    start, line = 0, 1
    with open(path, "rb") as f:
        while True:
            block = f.read(shard_bytes)
            if not block:
                break
            if b"\x00" in block:  # a NUL byte never occurs in text: skip the file
                counts["binary_skipped"] += 1
                return []
            tail = b"" if block.endswith(b"\n") else f.readline()
            if b"\x00" in tail:
                counts["binary_skipped"] += 1
                return []
            end = start + len(block) + len(tail)
            shards.append(Shard("jsonl", (str(path),), start, end, line))
            line += block.count(b"\n") + tail.count(b"\n")
            start = end
    return shards


def _hf_shards(path: Path, cfg: DataConfig, shard_bytes: int) -> list[Shard]:
    """Row ranges of about `shard_bytes` (judged from each part's Arrow size) of every part
    of a saved Hugging Face dataset in reading order; one shard when it is that small."""
    parts = hf_dataset_parts(path, cfg)
    sizes = [(name, len(ds), _arrow_bytes(ds)) for name, ds in parts]
    if sum(size for _, _, size in sizes) <= shard_bytes:
        return [Shard("hf", (str(path),))]
    shards = []
    for name, rows, size in sizes:
        per = max(1, rows * shard_bytes // max(size, 1))  # rows per shard
        for start in range(0, rows, per):
            shards.append(Shard("hf", (str(path),), start, min(rows, start + per), part=name))
    return shards


def _arrow_bytes(ds: Any) -> int:
    try:
        return int(ds.data.nbytes)
    except (AttributeError, TypeError, ValueError):
        return 0  # unknown: one shard per part


def _paragraph_shards(
    path: Path, cfg: DataConfig, shard_bytes: int, counts: Counter[str]
) -> list[Shard]:
    """Byte ranges of about `shard_bytes` cut at paragraph breaks, or the whole file as one
    shard (a small file, or one the reader must see whole: see genlab.data.text_plan)."""
    whole = [Shard("paragraphs", (str(path),))]  # read_paragraphs counts the file
    if _fits_one_shard(path, shard_bytes):
        return whole
    plan = plan_paragraphs(path, shard_bytes)
    if plan is None or len(plan.pieces) == 1:
        return whole
    if plan.invalid_utf8:
        if cfg.on_invalid_utf8 == "skip":
            return whole  # the reader refuses the file, naming it
        counts["invalid_utf8_replaced"] += 1  # once per file, as the whole reading counts
    counts["files"] += 1
    return [Shard("paragraph_range", (str(path),), p.start, p.end, before=p.first_index)
            for p in plan.pieces]  # fmt: skip


def _csv_shards(path: Path, shard_bytes: int, counts: Counter[str]) -> list[Shard]:
    """Byte ranges of about `shard_bytes` cut at record ends, or the whole file as one
    shard (a small file, or one whose quotes only csv's own reading can follow)."""
    whole = [Shard("records", (str(path),))]  # read_shard counts the file and its NULs
    if _fits_one_shard(path, shard_bytes):
        return whole
    plan = plan_csv(path, _delimiter(path), shard_bytes)
    if plan is None:
        return whole
    counts["files"] += 1
    if plan == "binary":
        counts["binary_skipped"] += 1
        return []
    header = tuple(plan.header)
    return [
        Shard("csv", (str(path),), p.start, p.end, p.first_line, before=p.rows_before,
              header=None if p.start == 0 else header)
        for p in plan.pieces
    ]  # fmt: skip


def _fits_one_shard(path: Path, shard_bytes: int) -> bool:
    """Whether a file is no larger than one shard (or unreadable: its reader reports it)."""
    try:
        return path.stat().st_size <= shard_bytes
    except OSError:
        return True


def _read_range(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_shard(shard: Shard, cfg: DataConfig, counts: Counter[str]) -> Iterator[Document]:
    """The documents of one shard in corpus order; what reading skipped goes to `counts`."""
    if shard.kind == "jsonl":
        path = Path(shard.paths[0])
        raw = _read_range(path, shard.start, shard.end)
        yield from iter_jsonl(raw, path, cfg, counts, first_line=shard.first_line)
        return
    if shard.kind == "csv":
        path = Path(shard.paths[0])
        raw = _read_range(path, shard.start, shard.end)
        header = None if shard.header is None else list(shard.header)
        yield from iter_csv(raw, path, cfg, counts, _delimiter(path), header=header,
                            first_line=shard.first_line, first_row=shard.before)  # fmt: skip
        return
    if shard.kind == "hf" and shard.part is not None:
        path = Path(shard.paths[0])
        ds = dict(hf_dataset_parts(path, cfg))[shard.part]
        yield from iter_hf_rows(path, shard.part, ds, cfg, counts, shard.start, shard.end)
        return
    if shard.kind == "paragraph_range":
        path = Path(shard.paths[0])
        # Invalid UTF-8 was counted when planned (data.on_invalid_utf8=replace).
        text = _read_range(path, shard.start, shard.end).decode("utf-8", errors="replace")
        yield from paragraph_documents(text, path, counts, first_index=shard.before)
        return
    if shard.kind == "records":
        path = Path(shard.paths[0])
        raw = path.read_bytes()
        counts["files"] += 1
        if b"\x00" in raw:
            counts["binary_skipped"] += 1
            return
        yield from iter_csv(raw, path, cfg, counts, _delimiter(path))
        return
    if shard.kind == "builtin":
        docs = builtin_documents(shard.paths[0])
        counts.update(records=len(docs), documents=len(docs))
        yield from docs
        return
    root = None if shard.root is None else Path(shard.root)
    for name in shard.paths:
        if shard.kind == "hf":
            result = read_hf_dataset(Path(name), cfg)
        elif shard.kind == "paragraphs":
            result = read_paragraphs(Path(name), cfg)
        elif Path(name).suffix.lower() in RECORD_SUFFIXES:  # pragma: no cover - planned apart
            result = read_path(name, cfg)
        else:
            result = read_whole_file(Path(name), cfg, root)
        counts.update(result.counts)
        yield from result.documents
