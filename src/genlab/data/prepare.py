"""`genlab data prepare`: the split documents (genlab.data.corpus) → a tokenizer trained on the
train split only → memory-mapped token files + manifest + removed.jsonl + report, cached.

A prepared dataset is a directory (see genlab.data.storage for the file layout) named by its
cache key: a hash of every data setting that shapes it, the seed, the pipeline version and the
source files' contents. Unchanged inputs reuse it; any change builds a new one. Builds happen
in a temporary sibling directory renamed into place at the end, so an interrupted or failed
build never leaves a half-written dataset where a finished one is expected, and concurrent
builders of the same key (tuner workers) cannot corrupt each other.

Training reads the splits back as np.memmap arrays: a corpus larger than RAM trains without
being loaded (the documents are held in memory only while preparing).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genlab.config import DataConfig
from genlab.data import storage
from genlab.data.bpe import BPETokenizer, HFTokenizer
from genlab.data.corpus import resolve_source
from genlab.data.documents import Document
from genlab.data.provenance import REPORT_FILE, print_report
from genlab.data.provenance import write_report as write_report_files
from genlab.data.storage import CACHE_ENV, default_cache_root
from genlab.data.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer, load_tokenizer
from genlab.errors import CheckpointError, ConfigError, DataError
from genlab.fileio import atomic_write_text, publish, unwritable

PIPELINE_VERSION = 2  # bump when a change to the pipeline changes what it writes
DOC_SEPARATOR = "\n\n"  # appended after every document in a split's token stream
TOKENIZER_DIR = "tokenizer"
_ORDER = {"train": 0, "val": 1, "test": 2}
# DataConfig keys that shape a prepared dataset (block_size and the image keys do not).
KEYED_FIELDS = (
    "source", "text_field", "id_field", "label_field", "on_invalid_utf8", "clean", "dedup",
    "split", "tokenizer", "vocab_size", "tokenizer_path", "tokenizer_train_mb", "cv_folds",
    "cv_fold",
)  # fmt: skip


@dataclass
class PreparedDataset:
    """A finished dataset directory: its manifest, its tokenizer, whether it was reused."""

    directory: Path
    manifest: dict[str, Any]
    tokenizer: Tokenizer
    cached: bool

    @property
    def cache_key(self) -> str:
        return str(self.manifest["cache_key"])

    def tokens(self, split: str) -> np.ndarray:
        """The split's token ids as a read-only np.memmap (empty array for an empty file)."""
        return storage.TokenFile.open(self.directory, split).tokens

    def documents(self, split: str) -> list[Document]:
        """The val or test documents, as the build split them (hash-checked): what
        `genlab eval` scores, without reading, cleaning or deduplicating the source again."""
        return read_held_out(self.directory, self.manifest, split)


def read_held_out(directory: Path, manifest: dict[str, Any], split: str) -> list[Document]:
    """The documents of a prepared dataset's val/test split (see PreparedDataset.documents)."""
    entry = (manifest.get("documents") or {}).get(split)
    if not isinstance(entry, dict):
        raise CheckpointError(
            f"prepared dataset {str(directory)[:120]!r} holds no {split} documents (built by "
            "an older genlab); delete it and run `genlab data prepare` again"
        )
    path = Path(directory) / str(entry.get("file"))
    if not path.is_file() or storage.file_sha256(path) != entry.get("sha256"):
        raise CheckpointError(
            f"{str(path)[:160]!r} is missing or changed since it was written; delete "
            f"{str(directory)[:120]!r} and prepare the data again"
        )
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            docs.append(Document(r["id"], r["text"], r["source"], r["position"], r["label"]))
    return docs


def keyed_config(cfg: DataConfig, seed: int) -> dict[str, Any]:
    """The settings a prepared dataset depends on (hashed into the cache key, and recorded)."""
    dumped = cfg.model_dump(mode="json")
    return {
        **{k: dumped[k] for k in KEYED_FIELDS},
        "seed": seed,
        "pipeline_version": PIPELINE_VERSION,
    }


def prepare_dataset(
    cfg: DataConfig,
    seed: int,
    out_dir: Path | None = None,
    console: Any = None,
    tokenizer: Tokenizer | None = None,
    show_report: bool = False,
) -> PreparedDataset:
    """Prepare (or reuse) the dataset `cfg` describes; see the module docstring.

    out_dir:   where to write it (default: <cache root>/<cache key>)
    console:   rich Console for progress bars (None: stderr, bars only on a terminal)
    tokenizer: use this tokenizer instead of building one (resume, fine-tuning); the
               dataset is then keyed by the tokenizer too
    """
    from genlab.track.console import make_console

    console = console or make_console(stderr=True)
    spec = resolve_source(cfg.source)
    files = list(spec.files)
    if cfg.tokenizer == "hf" and tokenizer is None:
        files.append(_hf_tokenizer_file(cfg.tokenizer_path))
    keyed = keyed_config(cfg, seed)
    key = storage.cache_key(keyed, files)
    fingerprint = None
    if tokenizer is not None:
        fingerprint = tokenizer_fingerprint(tokenizer)
        reuse = _finished(out_dir or default_cache_root() / key, key)
        if reuse is None or reuse.manifest.get("tokenizer_sha256") != fingerprint:
            keyed = {**keyed, "tokenizer_sha256": fingerprint}
            key = storage.cache_key(keyed, files)
    directory = Path(out_dir) if out_dir is not None else default_cache_root() / key
    found = _finished(directory, key)
    if found is None:
        _check_target(directory)
        _check_writable(directory, out_given=out_dir is not None)
        _build(directory, cfg, seed, keyed, key, spec, tokenizer, console)
        found = _finished(directory, key)
        if found is None:  # pragma: no cover - only when the disk lies to us
            raise DataError(f"prepared dataset {directory} is unreadable after writing it")
        found.cached = False
    if show_report:
        show_dataset_report(directory, console)
    return found


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 of the files `tokenizer.save` writes: equal fingerprints = same ids."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(Path(tmp))
        return _dir_sha256(Path(tmp))


def build_tokenizer(cfg: DataConfig, train_texts: Iterable[str]) -> Tokenizer:
    """The tokenizer data.tokenizer names, learned from the TRAIN split's texts only."""
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer == "char":
        # The separator's characters are always in the vocabulary (it is in every stream).
        return CharTokenizer.train(itertools.chain(train_texts, [DOC_SEPARATOR]))
    if cfg.tokenizer == "bpe":
        return BPETokenizer.train(train_texts, vocab_size=cfg.vocab_size)
    if cfg.tokenizer == "hf":
        return HFTokenizer.from_local(cfg.tokenizer_path)
    raise ConfigError(f"data.tokenizer {cfg.tokenizer!r} is not known; use byte|char|bpe|hf")


# --- building ------------------------------------------------------------------------------


def _build(
    directory: Path,
    cfg: DataConfig,
    seed: int,
    keyed: dict[str, Any],
    key: str,
    spec: Any,
    tokenizer: Tokenizer | None,
    console: Any,
) -> None:
    from genlab.data.engine import open_engine
    from genlab.data.shards import shard_size
    from genlab.data.streaming import build

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    publish(tmp, directory=True)  # mkdtemp makes it private; a dataset is a build output
    try:
        with (
            _disk_full_is_user_error(tmp, spec),
            _progress(console) as step,
            open_engine(cfg) as engine,
        ):

            def make_tokenizer(train_texts: Iterator[str]) -> Tokenizer:
                return tokenizer if tokenizer is not None else build_tokenizer(cfg, train_texts)

            built = build(tmp, cfg, seed, spec, make_tokenizer, step, engine, shard_size(cfg))
            started = time.perf_counter()
            write_report_files(tmp, built.report)
            report = json.loads((tmp / REPORT_FILE).read_text(encoding="utf-8"))
            report["read"] = built.read_counts
            report["seconds"] = {
                **built.seconds,
                "report": round(time.perf_counter() - started, 3),
            }
            report["parallel"] = {"shards": built.shards, "workers": engine.workers}
            report["tokens"] = {name: e["tokens"] for name, e in built.entries.items()}
            report["vocab_size"] = built.tokenizer.vocab_size
            atomic_write_text(tmp / REPORT_FILE, json.dumps(report, indent=2, ensure_ascii=False))
            extra = {
                "pipeline_version": PIPELINE_VERSION,
                "tokenizer": built.tokenizer.kind,
                "tokenizer_dir": TOKENIZER_DIR,
                "tokenizer_sha256": _dir_sha256(tmp / TOKENIZER_DIR),
                "separator": DOC_SEPARATOR,
                "source_files": [str(f) for f in spec.files[:1000]],
                "source_file_count": len(spec.files),
                "steps": [{"step": s, "before": b, "after": a} for s, b, a in built.report.steps],
                "removed_documents": built.removed,
                "folds": built.folds,
                "documents": built.documents,
            }
            storage.write_manifest(
                tmp, built.entries, keyed, built.tokenizer.vocab_size, key, extra
            )
            storage.swap_into_place(tmp, directory, lambda d: _finished(d, key) is not None)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _disk_full_is_user_error(tmp: Path, spec: Any) -> Iterator[None]:
    """A full disk (or a file-size limit) while building is the user's to fix: one line
    naming the place and the space, exit 2. The caller removes the partial build."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        free = shutil.disk_usage(tmp.parent).free >> 20
        need = 2 * sum(f.stat().st_size for f in spec.files if f.is_file()) >> 20
        raise DataError(
            f"disk full at {str(tmp.parent)[:120]!r} while preparing the dataset ({free} MB "
            f"free, about {max(need, 1)} MB needed); free space or point $GENLAB_CACHE_DIR "
            "(or --out) at a larger disk; the partial build was removed"
        ) from None


def _check_target(directory: Path) -> None:
    """Refuse to replace a non-empty directory that is not a prepared dataset."""
    if directory.is_file():
        raise DataError(f"--out {str(directory)!r} is a file; pass a directory path")
    occupied = directory.is_dir() and any(directory.iterdir())
    if occupied and not (directory / storage.MANIFEST_FILE).is_file():
        raise DataError(
            f"--out {str(directory)!r} is not empty and not a prepared dataset; pass an "
            "empty or new directory (nothing was written)"
        )


def _check_writable(directory: Path, out_given: bool) -> None:
    """Where the dataset goes takes writes: refused before the corpus is read, as one line,
    not a traceback once the work is done."""
    why = unwritable(directory)
    if why is not None:
        fix = "pass --out with" if out_given else f"point ${CACHE_ENV} at"
        raise DataError(
            f"the prepared dataset {str(directory)!r} cannot be written: {why}; {fix} a "
            "writable directory"
        )


def _finished(directory: Path, key: str) -> PreparedDataset | None:
    """The dataset in `directory` if it was built with `key` and its files are all there."""
    if not storage.is_cached(directory, key):
        return None
    manifest = storage.read_manifest(directory)
    for entry in manifest["splits"].values():
        path = directory / entry["file"]
        size = entry["tokens"] * np.dtype(entry["dtype"]).itemsize
        if not path.is_file() or path.stat().st_size != size:
            return None
    tok_dir = directory / manifest.get("tokenizer_dir", TOKENIZER_DIR)
    return PreparedDataset(directory, manifest, load_tokenizer(tok_dir), cached=True)


def _dir_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(storage.file_sha256(path).encode())
    return digest.hexdigest()


def _hf_tokenizer_file(path: str | None) -> Path:
    file = Path(str(path)).expanduser()
    file = file / "tokenizer.json" if file.is_dir() else file
    if not file.is_file():
        raise DataError(
            f"no Hugging Face tokenizer at {file}; point data.tokenizer_path at a local "
            "directory containing tokenizer.json"
        )
    return file


@contextlib.contextmanager
def _progress(console: Any) -> Iterator[Any]:
    """A `step(description, total)` factory over one rich Progress (transient bars)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:

        @contextlib.contextmanager
        def step(description: str, total: int | None) -> Iterator[Any]:
            task = progress.add_task(description, total=total)

            class Bar:
                def advance(self, n: int = 1) -> None:
                    progress.advance(task, n)

            try:
                yield Bar()
            finally:
                progress.remove_task(task)

        yield step


# --- reports -------------------------------------------------------------------------------


def show_dataset_report(directory: Path, console: Any = None) -> dict[str, Any]:
    """Print a prepared dataset's report (steps, removals, splits, top tokens); return it."""
    from rich.table import Table

    from genlab.track.console import make_console

    directory = Path(directory)
    manifest = storage.read_manifest(directory)
    path = directory / REPORT_FILE
    if not path.is_file():
        raise DataError(f"{directory} has no {REPORT_FILE}; run `genlab data prepare` again")
    report = json.loads(path.read_text(encoding="utf-8"))
    console = console or make_console()
    from genlab.data.provenance import DataReport

    print_report(
        DataReport(steps=[(s["step"], s["before"], s["after"]) for s in report["steps"]],
                   removed=report.get("removed", {})),
        console,
    )  # fmt: skip
    splits = Table(title=f"dataset {directory}")
    for col in ("split", "documents", "tokens", "min chars", "median chars", "max chars"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for name, entry in sorted(manifest["splits"].items(), key=lambda kv: _ORDER.get(kv[0], 9)):
        stats = report.get("lengths", {}).get(name, {})
        splits.add_row(
            name,
            str(entry["documents"]),
            str(entry["tokens"]),
            *(str(stats.get(k, "")) for k in ("min", "median", "max")),
        )
    console.print(splits)
    top = report.get("top_tokens", [])[:10]
    if top:
        console.print("top tokens: " + ", ".join(f"{t['token']!r}:{t['count']}" for t in top))
    console.print(
        f"tokenizer {manifest.get('tokenizer')} (vocab {manifest['vocab_size']}), cache key "
        f"{str(manifest['cache_key'])[:16]}, removed {manifest.get('removed_documents', 0)} "
        f"documents (see {directory / 'removed.jsonl'})"
    )
    return report
