"""The per-shard work of a streaming build, run by workers (genlab.data.engine).

`scan_shard`: read a shard, clean each document, and for every document that survives
cleaning compute what deduplication needs (the exact key, the MinHash signature) and spool
the cleaned document to disk. `tokenize_shard`: tokenize a spooled shard's documents into
per-split token files (and write the val/test documents, which `genlab eval` reads back).
Both are pure functions of their task (plain data, picklable), so any engine can run them;
the order-dependent decisions (which duplicate is first, which split) are the driver's
(genlab.data.streaming).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genlab.config import DataConfig
from genlab.data import spool
from genlab.data.clean import Cleaner
from genlab.data.dedup import SIGN_BATCH, Signer, exact_key, fold
from genlab.data.provenance import Removal
from genlab.data.shards import Shard, read_shard
from genlab.data.split import SPLIT_NAMES, TEST, TRAIN, VAL
from genlab.errors import DataError

_ENCODE_BATCH = 256  # texts per tokenizer call (the Rust tokenizers encode a batch at once)
_TOKENIZERS: dict[str, Any] = {}  # a worker loads each tokenizer once


@dataclass(frozen=True)
class ScanTask:
    number: int
    shard: Shard
    cfg: DataConfig
    spool: str  # where to write this shard's cleaned documents
    permutations: np.ndarray | None  # (2, num_perm) MinHash a, b; None: no near dedup


@dataclass
class ScanResult:
    """What the driver needs from a scanned shard, one row per document that survived
    cleaning (a "candidate"), in corpus order."""

    number: int
    counts: Counter[str]
    removals: list[Removal]  # cleaning's, in corpus order
    offsets: np.ndarray  # (n + 1,) int64: byte offset of each candidate in the spool file
    keys: np.ndarray  # (n,) uint64 exact keys (empty when dedup.exact is off)
    signatures: np.ndarray  # (n, num_perm) uint32 (n x 0 when dedup.near is off)
    sizes: np.ndarray  # (n,) int64 UTF-8 bytes of each candidate's text
    labels: list[str | None] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.offsets) - 1


def scan_shard(task: ScanTask) -> ScanResult:
    cfg = task.cfg
    counts: Counter[str] = Counter()
    cleaner = Cleaner(cfg.clean)
    near = cfg.dedup.near and task.permutations is not None
    signer = Signer(cfg.dedup, task.permutations) if near else None
    removals: list[Removal] = []
    offsets, keys, signatures, labels, sizes = [0], [], [], [], []
    unsigned: list[str] = []  # folded texts not signed yet (signed a batch at a time)
    with spool.SpoolWriter(task.spool) as writer:
        for doc in read_shard(task.shard, cfg, counts):
            counts["read_documents"] += 1
            outcome = cleaner(doc)
            if isinstance(outcome, Removal):
                removals.append(outcome)
                continue
            folded = fold(outcome.text) if (cfg.dedup.exact or signer) else ""
            if cfg.dedup.exact:
                keys.append(exact_key(folded))
            if signer is not None:
                unsigned.append(folded)
                if len(unsigned) >= SIGN_BATCH:
                    signatures.append(signer.sign_many(unsigned))
                    unsigned.clear()
            labels.append(outcome.label)
            text_utf8 = outcome.text.encode("utf-8")
            sizes.append(len(text_utf8))
            offsets.append(
                writer.write(outcome.id, text_utf8, outcome.source, outcome.position, outcome.label)
            )
    if signer is not None and unsigned:
        signatures.append(signer.sign_many(unsigned))
    counts.update({f"clean_{k}": v for k, v in cleaner.counts.items()})
    width = cfg.dedup.num_perm if signer is not None else 0
    return ScanResult(
        number=task.number,
        counts=counts,
        removals=removals,
        offsets=np.asarray(offsets, dtype=np.int64),
        keys=np.asarray(keys, dtype=np.uint64),
        signatures=(
            np.concatenate(signatures) if signatures else np.zeros((len(labels), width), np.uint32)
        ),
        sizes=np.asarray(sizes, dtype=np.int64),
        labels=labels,
    )


@dataclass(frozen=True)
class TokenTask:
    number: int
    spool: str
    codes: np.ndarray  # (n,) int8: each candidate's split code (UNUSED / removed: -1)
    tokenizer_dir: str
    out_dir: str  # where this shard's token and document files go
    separator: str
    dtype: str
    vocab_size: int


@dataclass
class SplitPiece:
    """One split's part of a tokenized shard."""

    tokens_file: str
    lengths: np.ndarray  # (documents,) tokens per document, separator included
    chars: np.ndarray  # (documents,) characters per document
    bytes: int  # UTF-8 bytes of the documents, separators included
    ids: list[str]
    documents_file: str | None = None  # val/test: the documents themselves, as JSON lines


@dataclass
class TokenResult:
    number: int
    pieces: dict[str, SplitPiece]
    train_counts: np.ndarray  # (vocab_size,) int64 token counts of the train part


def tokenize_shard(task: TokenTask) -> TokenResult:
    tokenizer = _tokenizer(task.tokenizer_dir)
    separator = np.asarray(tokenizer.encode(task.separator), dtype=np.int64)
    sep_bytes = len(task.separator.encode("utf-8"))
    out = Path(task.out_dir)
    writers: dict[int, Any] = {}
    pieces: dict[int, dict[str, Any]] = {}
    docs_files: dict[int, Any] = {}
    counts = np.zeros(task.vocab_size, dtype=np.int64)
    batch: list[tuple[int, list]] = []

    def flush() -> None:
        texts = [record[1] for _, record in batch]
        if hasattr(tokenizer, "encode_batch"):
            encoded = tokenizer.encode_batch(texts)
        else:
            encoded = [tokenizer.encode(t) for t in texts]
        arrays: dict[int, list[np.ndarray]] = {}
        for (code, record), ids in zip(batch, encoded):
            ids = np.asarray(ids, dtype=np.int64)
            arrays.setdefault(code, []).extend((ids, separator))  # one concatenate per split
            text = record[1]
            piece = pieces[code]
            piece["lengths"].append(ids.size + separator.size)
            piece["chars"].append(len(text))
            # An ASCII str's UTF-8 is one byte per character: no encoding to count it.
            piece["bytes"] += (len(text) if text.isascii() else len(text.encode())) + sep_bytes
            piece["ids"].append(record[0])
            if code in docs_files:
                keys = ("id", "text", "source", "position", "label")
                docs_files[code].write(json.dumps(dict(zip(keys, record)), ensure_ascii=False))
                docs_files[code].write("\n")
        for code, parts in arrays.items():
            tokens = np.concatenate(parts)  # this batch's documents of one split, in order
            if tokens.size and (tokens.min() < 0 or tokens.max() >= task.vocab_size):
                raise DataError(
                    f"token id out of range [0, {task.vocab_size}): got {int(tokens.min())}.."
                    f"{int(tokens.max())}; the tokenizer's vocab_size is wrong"
                )
            writers[code].write(tokens.astype(task.dtype).tobytes())
            if code == TRAIN:
                counts[:] += np.bincount(tokens, minlength=task.vocab_size)
        batch.clear()

    with contextlib.ExitStack() as stack:
        for code, record in zip(task.codes.tolist(), spool.records(task.spool)):
            if code < 0:
                continue
            if code not in writers:
                name = SPLIT_NAMES[code]
                tokens_path = out / f"tokens-{task.number:06d}-{name}.bin"
                writers[code] = stack.enter_context(open(tokens_path, "wb"))
                pieces[code] = {"lengths": [], "chars": [], "bytes": 0, "ids": []}
                if code in (VAL, TEST):
                    docs_path = out / f"documents-{task.number:06d}-{name}.jsonl"
                    docs_files[code] = stack.enter_context(open(docs_path, "w", encoding="utf-8"))
            batch.append((code, record))
            if len(batch) >= _ENCODE_BATCH:
                flush()
        if batch:
            flush()
    result: dict[str, SplitPiece] = {}
    for code, piece in pieces.items():
        name = SPLIT_NAMES[code]
        result[name] = SplitPiece(
            tokens_file=writers[code].name,
            lengths=np.asarray(piece["lengths"], dtype=np.int64),
            chars=np.asarray(piece["chars"], dtype=np.int64),
            bytes=piece["bytes"],
            ids=piece["ids"],
            documents_file=docs_files[code].name if code in docs_files else None,
        )
    return TokenResult(task.number, result, counts)


def _tokenizer(directory: str) -> Any:
    from genlab.data.tokenizers import load_tokenizer

    if directory not in _TOKENIZERS:
        _TOKENIZERS[directory] = load_tokenizer(Path(directory))
    return _TOKENIZERS[directory]


def quiet_worker() -> None:
    """Pool initializer: one thread per worker process (the workers are the parallelism)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
