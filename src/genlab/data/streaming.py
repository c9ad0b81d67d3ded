"""The streaming build of a prepared dataset: bounded memory, every core, shard by shard.

    plan shards ─► scan (workers: read, clean, exact key, MinHash; spool to disk)
                ─► driver, in corpus order: exact + near dedup (NearIndex), labels
                ─► split (genlab.data.split.assign_splits: from the kept count and labels)
                ─► tokenizer trained on the spooled train documents
                ─► tokenize (workers: per-shard token files + val/test documents)
                ─► driver: concatenate shards into <split>.bin, offsets, documents, reports

What grows with the corpus is the dedup index (an exact-key dict, 64-bit band keys and
file-backed signatures: see genlab.data.dedup) plus a few bytes per document (spool offsets,
split codes, label codes); documents themselves are only ever held a shard at a time. The
result is the in-memory chain's (read → clean → deduplicate → split_documents → tokenize),
document for document and token for token (tests/data/test_streaming.py checks it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genlab.config import DataConfig
from genlab.data import spool, storage
from genlab.data.bpe import training_sample
from genlab.data.corpus import MINHASH_SEED, SourceSpec, no_text_error
from genlab.data.dedup import NearIndex, SignatureStore, minhash_permutations
from genlab.data.engine import Engine
from genlab.data.provenance import REMOVED_FILE, DataReport, Removal, describe_document, ensure_kept
from genlab.data.shards import likely_several, plan_shards
from genlab.data.split import SPLIT_NAMES, TRAIN, UNUSED, LabelCoder, assign_splits
from genlab.data.stages import ScanTask, TokenTask, scan_shard, tokenize_shard
from genlab.data.tokenizers import Tokenizer

WORK_DIR = ".work"  # spool, signatures and token shards; removed before the rename
DOCUMENTS_SUFFIX = ".documents.jsonl"  # <split>.documents.jsonl: the val/test documents
_REF_BITS = 32  # a candidate's reference: shard number << 32 | row in the shard
_MAX_CLUSTERS = 5


@dataclass
class BuildResult:
    """What a streaming build wrote into the directory, for the manifest and the report."""

    entries: dict[str, dict[str, Any]]  # storage manifest entries per split
    documents: dict[str, dict[str, Any]]  # val/test documents files: file, sha256, documents
    report: DataReport
    read_counts: dict[str, int]
    removed: int
    folds: bool
    tokenizer: Tokenizer
    seconds: dict[str, float]  # wall time per stage: scan, split, tokenizer, tokenize
    shards: int  # pieces the source was cut into (the units of parallel work)


class _Candidates:
    """Where every candidate (a cleaned document) lies in the spool, to name a kept
    document in a later duplicate's Removal without holding any document in memory."""

    def __init__(self) -> None:
        self.spools: list[str] = []
        self.offsets: list[np.ndarray] = []
        self.files: dict[int, Any] = {}  # shard -> its spool, opened on the first lookup

    def add(self, path: str, offsets: np.ndarray) -> None:
        self.spools.append(path)
        self.offsets.append(offsets)

    def record(self, ref: int, with_text: bool = True) -> list[Any]:
        """[id, text, source, position, label] of a candidate (text None without with_text)."""
        shard, row = ref >> _REF_BITS, ref & ((1 << _REF_BITS) - 1)
        start = int(self.offsets[shard][row])
        if shard not in self.files:
            self.files[shard] = open(self.spools[shard], "rb")  # noqa: SIM115 - closed in close()
        return spool.read_at(self.files[shard], start, with_text)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


def build(
    directory: Path,
    cfg: DataConfig,
    seed: int,
    spec: SourceSpec,
    make_tokenizer: Any,
    step: Any,
    engine: Engine,
    shard_bytes: int,
) -> BuildResult:
    """Write a prepared dataset's files into `directory` (a fresh build directory; the
    caller writes the manifest and renames it into place). `make_tokenizer(texts)` returns
    the tokenizer, given an iterator over the train documents' texts."""
    work = directory / WORK_DIR
    work.mkdir()
    clock = _StageClock()
    if likely_several(spec, shard_bytes):  # the workers will be needed: they start up
        engine.start()  # while the driver plans the shards and imports
    # Planning reads a large file once (line, record or paragraph ends): a spinner, not silence.
    with step("cutting the source into shards", None):
        shards, read_counts = plan_shards(cfg, spec, shard_bytes)
    permutations = (
        minhash_permutations(cfg.dedup.num_perm, MINHASH_SEED) if cfg.dedup.near else None
    )
    tasks = [
        ScanTask(i, shard, cfg, str(work / f"spool-{i:06d}.bin"), permutations)
        for i, shard in enumerate(shards)
    ]
    warm = _import_later_stages() if len(tasks) > 1 else None
    try:
        with step(f"reading, cleaning, deduplicating ({len(tasks)} shards)", len(tasks)) as bar:
            scan = _scan_and_deduplicate(directory, work, cfg, engine, tasks, bar)
    finally:
        if warm is not None:
            warm.join()
    scan.candidates.close()
    clock.lap("scan")
    read_counts.update(scan.read_counts)
    if not scan.documents_read:
        raise no_text_error(cfg, read_counts)
    ensure_kept(scan.kept, scan.removed_by_reason, total_before=scan.documents_read)
    chosen = assign_splits(
        scan.labels.codes(), cfg.split, seed=seed % 2**32, folds=cfg.cv_folds, cv_fold=cfg.cv_fold
    )
    codes = _codes_per_shard(scan.keep, chosen.codes)
    clock.lap("split")
    train_sizes = [sizes[c == TRAIN] for sizes, c in zip(scan.sizes, codes)]
    take = np.ones(sum(len(s) for s in train_sizes), dtype=bool)
    if cfg.tokenizer == "bpe":
        take = training_sample(np.concatenate([np.zeros(0, np.int64), *train_sizes]),
                               cfg.tokenizer_train_mb)  # fmt: skip
    with step(f"training the {cfg.tokenizer} tokenizer on the train split", None):
        tokenizer = make_tokenizer(_train_texts(scan.candidates.spools, codes, take))
    tokenizer_dir = directory / "tokenizer"
    tokenizer.save(tokenizer_dir)
    clock.lap("tokenizer")
    dtype = storage.token_dtype(tokenizer.vocab_size)
    from genlab.data.prepare import DOC_SEPARATOR

    token_tasks = [
        TokenTask(i, scan.candidates.spools[i], codes[i], str(tokenizer_dir), str(work),
                  DOC_SEPARATOR, dtype.name, tokenizer.vocab_size)
        for i in range(len(tasks))
    ]  # fmt: skip
    with step(f"tokenizing ({len(token_tasks)} shards)", len(token_tasks)) as bar:
        assembled = _assemble(directory, engine.imap(tokenize_shard, token_tasks), bar, chosen)
    shutil.rmtree(work)
    clock.lap("tokenize")
    for entry in assembled.entries.values():
        entry["dtype"] = dtype.name
    scan.report.lengths = assembled.lengths
    counts = assembled.train_counts
    top = np.argsort(-counts, kind="stable")[:20]
    scan.report.top_tokens = [
        (tokenizer.decode([int(i)]), int(counts[i])) for i in top if counts[i]
    ]
    return BuildResult(
        entries=assembled.entries,
        documents=assembled.documents,
        report=scan.report,
        read_counts=dict(read_counts),
        removed=sum(scan.removed_by_reason.values()),
        folds=bool(cfg.cv_folds),
        tokenizer=tokenizer,
        seconds=clock.seconds,
        shards=len(tasks),
    )


def _import_later_stages() -> threading.Thread:
    """Import what the split (sklearn, ~0.8 s) and the report's plot (matplotlib, ~0.4 s)
    need on a thread, while the driver mostly waits for the scan's workers, instead of
    after the scan, when everything waits for the driver. A module that fails to import
    fails again, with its message, where it is used."""

    def load() -> None:
        with contextlib.suppress(Exception):
            import sklearn.model_selection  # noqa: F401
        with contextlib.suppress(Exception):
            import genlab.track.figures  # noqa: F401

    thread = threading.Thread(target=load, name="genlab-imports", daemon=True)
    thread.start()
    return thread


class _StageClock:
    """Wall seconds per stage of a build, for report.json ("where the time went")."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.since = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self.since, 3)
        self.since = now


# --- scanning and deduplication (the driver's order-dependent part) ---------------------------


@dataclass
class _Scan:
    candidates: _Candidates
    keep: list[np.ndarray]  # per shard: (candidates,) bool, kept after deduplication
    sizes: list[np.ndarray]  # per shard: (candidates,) int64 UTF-8 bytes of each text
    labels: LabelCoder
    read_counts: Counter[str]
    removed_by_reason: Counter[str]
    documents_read: int
    kept: int
    report: DataReport


def _scan_and_deduplicate(
    directory: Path, work: Path, cfg: DataConfig, engine: Engine, tasks: list[ScanTask], bar: Any
) -> _Scan:
    dedup = cfg.dedup
    candidates = _Candidates()
    exact_first: dict[int, int] = {}  # exact key -> ref of the first candidate with it
    near = None
    if dedup.near:
        near = NearIndex(dedup, SignatureStore(dedup.num_perm, work / "signatures.u32"))
    near_refs = array("q")  # near index -> ref of that kept candidate
    clusters: dict[int, list[tuple[int, str, float]]] = {}  # kept ref -> (ref, reason, sim)
    labels = LabelCoder()
    keep: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    read_counts: Counter[str] = Counter()
    clean_counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    after_exact = 0

    def removal(ref: int, reason: str, kept_ref: int, sim: float) -> Removal:
        doc = candidates.record(ref, with_text=False)
        kept = candidates.record(kept_ref, with_text=False)
        clusters.setdefault(kept_ref, []).append((ref, reason, sim))
        return Removal(doc[0], doc[2], doc[3], reason, kept[0], kept[2], kept[3], sim)

    with open(directory / REMOVED_FILE, "w", encoding="utf-8") as removed_file:

        def write(r: Removal) -> None:
            reasons[r.reason] += 1
            removed_file.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")

        for result in engine.imap(scan_shard, tasks):
            bar.advance()
            candidates.add(tasks[result.number].spool, result.offsets)
            sizes.append(result.sizes)
            for key, value in result.counts.items():
                target = clean_counts if key.startswith("clean_") else read_counts
                target[key.removeprefix("clean_")] += value
            for r in result.removals:
                write(r)
            mask = np.zeros(result.size, dtype=bool)
            # The shard's band keys looked up in the merged tables at once; they stay fixed
            # until merge_if_due after the shard (what this shard keeps is in the recent dict).
            band_keys = near.band_keys(result.signatures) if near is not None else None
            merged = near.table.merged_hits(band_keys) if near is not None else {}
            for row in range(result.size):
                ref = result.number << _REF_BITS | row
                if dedup.exact:
                    key = int(result.keys[row])
                    first = exact_first.get(key)
                    if first is not None:
                        write(removal(ref, "exact_dup", first, 1.0))
                        continue
                    exact_first[key] = ref
                after_exact += 1
                if near is not None:
                    signature, keys = result.signatures[row], band_keys[row]
                    found = near.match(signature, keys, merged.get(row, set()))
                    if found is not None:
                        kept_ref = near_refs[found[0]]
                        write(removal(ref, "near_dup", kept_ref, round(found[1], 4)))
                        continue
                    near.add(signature, keys, merge=False)
                    near_refs.append(ref)
                mask[row] = True
                labels.add(result.labels[row])
            keep.append(mask)
            if near is not None:
                near.table.merge_if_due()
    if near is not None:
        near.store.close()
    documents = int(read_counts.pop("read_documents", 0))
    cleaned = sum(int(m.size) for m in keep)
    kept = sum(int(m.sum()) for m in keep)
    steps = [
        ("read", int(read_counts.get("records", documents)), documents),
        ("clean", documents, cleaned),
    ]
    if dedup.exact:
        steps.append(("exact dedup", cleaned, after_exact))
    if dedup.near:
        steps.append(("near dedup", after_exact, kept))
    report = DataReport(
        steps=steps,
        removed=dict(sorted(reasons.items())),
        duplicates=_duplicate_examples(clusters, candidates),
    )
    return _Scan(candidates, keep, sizes, labels, read_counts, reasons, documents, kept, report)


def _duplicate_examples(
    clusters: dict[int, list[tuple[int, str, float]]], candidates: _Candidates
) -> list[dict[str, Any]]:
    """The largest duplicate clusters, as genlab.data.provenance.duplicate_examples shows
    them (texts read back from the spool)."""
    largest = sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:_MAX_CLUSTERS]
    examples = []
    for kept_ref, members in largest:
        kept = candidates.record(kept_ref)
        removed = []
        for ref, reason, sim in members:
            doc = candidates.record(ref)
            entry = describe_document(doc[0], doc[2], doc[3], doc[1])
            removed.append({**entry, "reason": reason, "similarity": sim})
        examples.append({"kept": describe_document(kept[0], kept[2], kept[3], kept[1]),
                         "removed": removed})  # fmt: skip
    return examples


def _codes_per_shard(keep: list[np.ndarray], kept_codes: np.ndarray) -> list[np.ndarray]:
    """Each shard's (candidates,) split codes: the kept candidates' codes, UNUSED else."""
    out, at = [], 0
    for mask in keep:
        codes = np.full(mask.size, UNUSED, dtype=np.int8)
        n = int(mask.sum())
        codes[mask] = kept_codes[at : at + n]
        at += n
        out.append(codes)
    return out


def _train_texts(spools: list[str], codes: list[np.ndarray], take: np.ndarray) -> Iterator[str]:
    """The texts of the train documents that `take` (one flag per train document, in corpus
    order) marks; a text not taken is skipped without reading it."""
    at = 0
    for path, shard_codes in zip(spools, codes):
        train = shard_codes == TRAIN
        flags = np.zeros(shard_codes.size, dtype=bool)
        flags[train] = take[at : at + int(train.sum())]
        at += int(train.sum())
        if not flags.any():
            continue
        yield from spool.texts(path, flags.tolist())


# --- assembling the tokenized shards ------------------------------------------------------------


@dataclass
class _Assembled:
    entries: dict[str, dict[str, Any]]
    documents: dict[str, dict[str, Any]]
    lengths: dict[str, np.ndarray]
    train_counts: np.ndarray


def _assemble(directory: Path, results: Iterator[Any], bar: Any, chosen: Any) -> _Assembled:
    """Append each shard's pieces, in order, to the split files; write split_ids.json."""
    names = [SPLIT_NAMES[c] for c in sorted(SPLIT_NAMES)]
    digests = {n: hashlib.sha256() for n in names}
    doc_digests = {n: hashlib.sha256() for n in ("val", "test")}
    lengths: dict[str, list[np.ndarray]] = {n: [] for n in names}
    chars: dict[str, list[np.ndarray]] = {n: [] for n in names}
    nbytes: Counter[str] = Counter()
    train_counts: Any = 0
    with contextlib.ExitStack() as stack:
        bins = {n: stack.enter_context(open(directory / f"{n}.bin", "wb")) for n in names}
        docs = {
            n: stack.enter_context(open(directory / f"{n}{DOCUMENTS_SUFFIX}", "wb"))
            for n in doc_digests
        }
        ids_files = {
            n: stack.enter_context(open(directory / f".ids-{n}.json", "w", encoding="utf-8"))
            for n in names
        }
        for result in results:
            bar.advance()
            train_counts = train_counts + result.train_counts
            for name, piece in result.pieces.items():
                _append(Path(piece.tokens_file), bins[name], digests[name])
                if piece.documents_file is not None:
                    _append(Path(piece.documents_file), docs[name], doc_digests[name])
                lengths[name].append(piece.lengths)
                chars[name].append(piece.chars)
                nbytes[name] += piece.bytes
                for doc_id in piece.ids:
                    ids_files[name].write(json.dumps(doc_id, ensure_ascii=False) + "\n")
    entries, documents, per_split_chars = {}, {}, {}
    for name in names:
        doc_lengths = np.concatenate(lengths[name]) if lengths[name] else np.zeros(0, np.int64)
        if name == "test" and not doc_lengths.size:
            for path in (directory / f"{name}.bin", directory / f"test{DOCUMENTS_SUFFIX}"):
                path.unlink()
            continue
        offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int64)
        np.save(directory / f"{name}.offsets.npy", offsets)
        entries[name] = {
            "file": f"{name}.bin",
            "offsets_file": f"{name}.offsets.npy",
            "dtype": None,  # filled in by the caller, who knows the tokenizer
            "tokens": int(offsets[-1]),
            "documents": int(doc_lengths.size),
            "sha256": digests[name].hexdigest(),
            "offsets_sha256": storage.file_sha256(directory / f"{name}.offsets.npy"),
            "bytes": int(nbytes[name]),
        }
        per_split_chars[name] = (
            np.concatenate(chars[name]) if chars[name] else np.zeros(0, np.int64)
        )
        if name in docs:
            documents[name] = {
                "file": f"{name}{DOCUMENTS_SUFFIX}",
                "sha256": doc_digests[name].hexdigest(),
                "documents": int(doc_lengths.size),
            }
    _write_split_ids(directory, [n for n in names if n in entries], chosen)
    counts = np.asarray(train_counts, dtype=np.int64)
    return _Assembled(entries, documents, per_split_chars, counts)


def _append(piece: Path, out: Any, digest: Any) -> None:
    with open(piece, "rb") as f:
        while block := f.read(1 << 20):
            out.write(block)
            digest.update(block)
    piece.unlink()


def _write_split_ids(directory: Path, names: list[str], chosen: Any) -> None:
    """split_ids.json ({split: [ids]}, and "folds": {train id: fold}), written as a stream."""
    folds = chosen.folds[chosen.folds >= 0] if chosen.folds.size else None
    with open(directory / "split_ids.json", "w", encoding="utf-8") as out:
        out.write("{")
        for i, name in enumerate(names):
            out.write(f'{", " if i else ""}"{name}": [')
            with open(directory / f".ids-{name}.json", encoding="utf-8") as ids:
                for j, line in enumerate(ids):
                    out.write((", " if j else "") + line.rstrip("\n"))
            out.write("]")
        if folds is not None:
            out.write(', "folds": {')
            # Folds name the original train documents: today's train plus, with cv_fold,
            # the fold that became val (both files are in corpus order; merge by position).
            for j, (doc_id, fold) in enumerate(zip(_original_train_ids(directory, chosen), folds)):
                out.write(f"{', ' if j else ''}{doc_id}: {int(fold)}")
            out.write("}")
        out.write("}")
    for name in SPLIT_NAMES.values():
        (directory / f".ids-{name}.json").unlink(missing_ok=True)


def _original_train_ids(directory: Path, chosen: Any) -> Iterator[str]:
    """The JSON-encoded ids of the documents that had folds, in corpus order."""
    has_fold = chosen.folds >= 0
    codes = chosen.codes[has_fold]  # TRAIN, or VAL for the cv_fold documents
    with contextlib.ExitStack() as stack:
        files = {
            c: stack.enter_context(
                open(directory / f".ids-{SPLIT_NAMES[c]}.json", encoding="utf-8")
            )
            for c in set(codes.tolist())
        }
        for code in codes.tolist():
            yield files[code].readline().rstrip("\n")
