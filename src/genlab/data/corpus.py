"""The document side of data preparation: read → clean → deduplicate → split.

`split_corpus(cfg, seed)` is the in-memory path: the whole corpus as lists, through the list
functions (clean, deduplicate, split_documents). `genlab data prepare` and training build the
same result in bounded memory (genlab.data.streaming); both decide splits with the one
function `genlab.data.split.assign_splits`, and `genlab eval` reads the held-out documents
the build stored. Deduplication runs before the split, so a document and its near-copy can
never straddle train and val/test.

`data.source` may be a built-in corpus (python-docs, sklearn-docs), a single file
(.jsonl/.ndjson/.csv/.tsv read as records; any other file is text cut into documents at blank
lines), a directory (its .txt files one document each, its record files as records; or a
saved Hugging Face dataset), or a glob pattern (each match read by its suffix; text files one
document each).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.config import DataConfig
from genlab.data.clean import clean
from genlab.data.dedup import deduplicate
from genlab.data.documents import Document
from genlab.data.provenance import Removal, ensure_not_empty
from genlab.data.sources import BUILTIN_TEXT_CORPORA, builtin_documents, builtin_files
from genlab.data.split import split_documents
from genlab.data.tabular import SourceResult, decode_utf8, read_hf_dataset, read_path
from genlab.errors import DataError

RECORD_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")
_GLOB_CHARS = re.compile(r"[*?\[]")
# Where one text file's paragraphs end: a run of whitespace holding two line breaks or more.
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# Files `Dataset.save_to_disk` writes; their presence marks a Hugging Face dataset directory.
_HF_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
# MinHash's seed is fixed, not the experiment's: which documents are near-duplicates is a
# property of the corpus, and runs with other seeds (tuning trials) hold out the same kind of
# documents.
MINHASH_SEED = 0

# (description, total or None) -> a context manager whose value has .advance()
Step = Callable[[str, "int | None"], Any]


@dataclass(frozen=True)
class SourceSpec:
    """What `data.source` points at: kind ("builtin", "hf", "file", "files") and the files
    that feed the cache key (a changed file means a changed dataset)."""

    kind: str
    files: list[Path]
    root: Path | None = None


@dataclass
class CorpusSplit:
    """Documents per split after cleaning and deduplication, and what was removed.

    `folds` maps a train document id to its cross-validation fold (data.cv_folds > 0);
    when data.cv_fold is set, `train`/`val` already are that fold's train and validation.
    `steps` are (name, documents before, documents after), for the report.
    """

    train: list[Document]
    val: list[Document]
    test: list[Document]
    removed: list[Removal] = field(default_factory=list)
    steps: list[tuple[str, int, int]] = field(default_factory=list)
    read_counts: dict[str, int] = field(default_factory=dict)
    folds: dict[str, int] = field(default_factory=dict)
    source: SourceSpec | None = None
    before_dedup: list[Document] = field(default_factory=list)

    def __getitem__(self, name: str) -> list[Document]:
        if name not in ("train", "val", "test"):
            raise KeyError(name)
        return getattr(self, name)

    def splits(self) -> dict[str, list[Document]]:
        """train and val always; test only when it has documents."""
        named = {"train": self.train, "val": self.val, "test": self.test}
        return {k: v for k, v in named.items() if v or k != "test"}


def resolve_source(source: str) -> SourceSpec:
    """Classify `data.source` and list its files, without reading them."""
    if source in BUILTIN_TEXT_CORPORA:
        # The built-in corpus changes with the Python / scikit-learn version: key on its files.
        return SourceSpec("builtin", builtin_files(source))
    if _GLOB_CHARS.search(source):
        files = [f for f in glob_files(source) if f.is_file()]
        if not files:
            raise DataError(
                f"data.source glob {source!r} matches no files; check the pattern "
                "(use '**' to search subdirectories, e.g. 'data/**/*.jsonl')"
            )
        return SourceSpec("files", files)
    path = Path(source).expanduser()
    if path.is_dir():
        everything = sorted(p for p in path.rglob("*") if p.is_file())
        if any((path / m).is_file() for m in _HF_MARKERS):
            return SourceSpec("hf", everything, root=path)
        files = [p for p in everything if p.suffix.lower() in (".txt", *RECORD_SUFFIXES)]
        if not files:
            raise DataError(
                f"data.source directory {source!r} holds no .txt, .jsonl or .csv files; put "
                f"data there or use a built-in corpus ({', '.join(BUILTIN_TEXT_CORPORA)})"
            )
        return SourceSpec("files", files, root=path)
    if path.is_file():
        return SourceSpec("file", [path])
    raise DataError(
        f"data.source {source!r} is neither a built-in corpus nor an existing path or glob; "
        f"use one of {list(BUILTIN_TEXT_CORPORA)}, a .txt/.jsonl/.csv file, a directory or a glob"
    )


def glob_files(pattern: str) -> list[Path]:
    """The paths a glob pattern matches, sorted. `**` does not descend into symlinked
    directories (pathlib's rule), so a link loop such as `ln -s . dir/s1` cannot make the
    search endless, unlike glob.glob(recursive=True)."""
    parts = Path(pattern).expanduser().parts
    fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)), len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    rest = str(Path(*parts[fixed:])) if fixed < len(parts) else "."
    if not base.is_dir():
        return []
    try:
        return sorted(base.glob(rest))
    except (ValueError, NotImplementedError) as exc:  # e.g. '**' inside a name part
        raise DataError(
            f"data.source glob {pattern[:80]!r} is not a valid pattern ({exc}); write '**' "
            "as a whole path part, e.g. 'data/**/*.jsonl'"
        ) from None


def read_source(
    cfg: DataConfig, spec: SourceSpec | None = None, labels_from_folders: bool = False
) -> SourceResult:
    """Every document of `data.source`, with counts of what reading skipped.
    `labels_from_folders`: a text file in a sub-folder of a directory source is labelled with
    that sub-folder's name (a folder per class; task classify)."""
    spec = spec or resolve_source(cfg.source)
    result = SourceResult()
    if spec.kind == "builtin":
        result.documents = builtin_documents(cfg.source)
        result.counts.update(records=len(result.documents), documents=len(result.documents))
    elif spec.kind == "hf":
        result = read_hf_dataset(spec.root, cfg)
    elif spec.kind == "file" and spec.files[0].suffix.lower() not in RECORD_SUFFIXES:
        result = read_paragraphs(spec.files[0], cfg)
    else:
        for file in spec.files:
            if file.suffix.lower() in RECORD_SUFFIXES:
                result.extend(read_path(file, cfg))
            else:  # a text file among many: one document
                label = _folder_label(file, spec.root) if labels_from_folders else None
                result.extend(read_whole_file(file, cfg, spec.root, label))
    if not result.documents:
        raise no_text_error(cfg, result.counts)
    return result


def no_text_error(cfg: DataConfig, counts: Mapping[str, int]) -> DataError:
    """The error for a source that yielded no document, with what reading counted."""
    listed = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "none"
    hint = (
        "; or set data.on_invalid_utf8=replace to keep records with bad bytes"
        if counts.get("invalid_utf8_skipped")
        else ""
    )
    return DataError(
        f"data.source {cfg.source[:80]!r} has no text: no documents were read ({listed}); "
        f"point it at non-empty text{hint}"
    )


def split_corpus(
    cfg: DataConfig,
    seed: int,
    progress: Step | None = None,
    spec: SourceSpec | None = None,
    labels_from_folders: bool = False,
) -> CorpusSplit:
    """Read, clean, deduplicate and split `cfg.source` (deterministic for a seed); see
    `read_source` for `labels_from_folders`.

    With data.cv_folds=K the train documents get fold ids; with data.cv_fold=k as well, fold
    k becomes the validation split and the other folds the training split (the held-out
    validation documents stay unused, so a tuner never selects on them)."""
    spec = spec or resolve_source(cfg.source)
    read = read_source(cfg, spec, labels_from_folders)
    docs = read.documents
    steps = [("read", int(read.counts.get("records", len(docs))), len(docs))]
    cleaned = clean(_tracked(docs, progress, "cleaning"), cfg.clean)
    steps.append(("clean", len(docs), len(cleaned.kept)))
    removed = list(cleaned.removed)
    # deduplicate() takes its input whole, so its bar is a spinner (total unknown).
    with _step(progress, f"deduplicating {len(cleaned.kept):,} documents", None):
        deduped = deduplicate(cleaned.kept, cfg.dedup, seed=MINHASH_SEED)
    removed += deduped.removed
    after_exact = len(cleaned.kept) - deduped.counts.get("exact_dup", 0)
    if cfg.dedup.exact:
        steps.append(("exact dedup", len(cleaned.kept), after_exact))
    if cfg.dedup.near:
        steps.append(("near dedup", after_exact, len(deduped.kept)))
    ensure_not_empty(deduped.kept, removed, total_before=len(docs))
    split_seed = seed % 2**32  # scikit-learn's random_state must fit 32 bits
    parts = split_documents(deduped.kept, cfg.split, seed=split_seed, folds=cfg.cv_folds)
    result = CorpusSplit(
        parts.train,
        parts.val,
        parts.test,
        removed=removed,
        steps=steps,
        read_counts=dict(read.counts),
        source=spec,
        before_dedup=cleaned.kept,
    )
    if cfg.cv_folds:
        result.folds = {d.id: f for d, f in zip(parts.train, parts.folds)}
        if cfg.cv_fold is not None:
            result.train = [d for d, f in zip(parts.train, parts.folds) if f != cfg.cv_fold]
            result.val = [d for d, f in zip(parts.train, parts.folds) if f == cfg.cv_fold]
    return result


# --- reading text files ----------------------------------------------------------------------


def _decode(path: Path, options: DataConfig, counts: Any) -> str | None:
    raw = path.read_bytes()
    counts["files"] += 1
    if b"\x00" in raw[:8192]:
        counts["binary_skipped"] += 1
        return None
    return decode_utf8(raw, options, counts)


def read_paragraphs(path: Path, options: DataConfig) -> SourceResult:
    """A single text file cut into documents at blank lines, so it can still be split."""
    result = SourceResult()
    text = _decode(path, options, result.counts)
    if text is None:
        why = "looks binary (NUL bytes)" if result.counts["binary_skipped"] else "is not UTF-8"
        raise DataError(
            f"data file {str(path)!r} {why}; use a UTF-8 text file "
            "(or data.on_invalid_utf8=replace)"
        )
    result.documents = list(paragraph_documents(text, path, result.counts))
    return result


def paragraph_documents(
    text: str, path: Path, counts: Any, first_index: int = 0
) -> Iterator[Document]:
    """The paragraphs of `text` (a whole file, or a piece of one cut at a paragraph break
    whose first paragraph has number `first_index`; genlab.data.text_plan) as documents."""
    for i, para in enumerate(PARAGRAPH_BREAK.split(text), start=first_index):
        para = para.strip("\n")
        if para.strip():
            counts["records"] += 1
            yield Document(f"{path.name}#{i}", para, str(path), position=f"{path}:paragraph {i}")


def read_whole_file(
    path: Path, options: DataConfig, root: Path | None, label: str | None = None
) -> SourceResult:
    result = SourceResult()
    text = _decode(path, options, result.counts)
    if text is not None and text.strip():
        result.counts["records"] += 1
        doc_id = str(path.relative_to(root)) if root is not None else str(path)
        position = f"{path}:file"
        result.documents.append(Document(doc_id, text, str(path), position, label))
    return result


def _folder_label(path: Path, root: Path | None) -> str | None:
    """The class of a file in a folder-per-class directory: its first sub-folder's name
    (None for a file directly in the directory)."""
    if root is None:
        return None
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def _step(progress: Step | None, description: str, total: int | None) -> Any:
    return progress(description, total) if progress is not None else contextlib.nullcontext()


def _tracked(docs: list[Document], progress: Step | None, what: str) -> Iterable[Document]:
    """`docs`, advancing a progress bar as a step consumes them (no bar: `docs` itself)."""
    if progress is None:
        return docs

    def walk() -> Iterator[Document]:
        with progress(f"{what} {len(docs):,} documents", len(docs)) as bar:
            for doc in docs:
                yield doc
                bar.advance()

    return walk()
