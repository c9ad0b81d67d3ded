"""Tokenized splits on disk as memory-mapped arrays, with a manifest and a cache key.

Layout of a dataset directory:
    <split>.bin           token ids, all documents of the split concatenated (uint16 when the
                          vocabulary fits, else uint32), read back with np.memmap
    <split>.offsets.npy   int64 start of each document in <split>.bin (+ the total at the end)
    manifest.json         counts, dtype, sha256 of each file, the config that made them and the
                          cache key; written LAST and atomically, so a directory without a
                          manifest is an unfinished build and is never trusted

`TokenFile` opens a split without reading it into RAM and cuts `(x, y)` windows of
block_size tokens (y is x shifted by one) as int64 torch tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genlab.errors import CheckpointError, DataError
from genlab.fileio import atomic_write_text, file_sha256

CACHE_ENV = "GENLAB_CACHE_DIR"
DEFAULT_CACHE = Path(".cache") / "genlab" / "datasets"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20  # bytes hashed per read


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32: half the disk and page cache."""
    if vocab_size < 1:
        raise DataError(f"vocab_size must be >= 1, got {vocab_size}; the tokenizer is empty")
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def write_split(
    directory: Path,
    name: str,
    token_lists: Iterable[Sequence[int]],
    vocab_size: int,
    separator: int | None = None,
) -> dict[str, Any]:
    """Stream tokenized documents of one split to `<name>.bin` (+ offsets); return its
    manifest entry. `separator` (e.g. an end-of-text id) is appended after each document."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    bin_path = directory / f"{name}.bin"
    tmp = bin_path.with_name(f".{bin_path.name}.tmp")
    offsets = [0]
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        for ids in token_lists:
            arr = np.asarray(
                list(ids) + ([separator] if separator is not None else []), dtype=np.int64
            )
            if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
                raise DataError(
                    f"token id out of range [0, {vocab_size}) in split {name!r}: got "
                    f"{int(arr.min())}..{int(arr.max())}; the tokenizer's vocab_size is wrong"
                )
            data = arr.astype(dtype).tobytes()
            f.write(data)
            digest.update(data)
            offsets.append(offsets[-1] + int(arr.size))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, bin_path)
    offsets_path = directory / f"{name}.offsets.npy"
    np.save(offsets_path, np.asarray(offsets, dtype=np.int64))
    return {
        "file": bin_path.name,
        "offsets_file": offsets_path.name,
        "dtype": dtype.name,
        "tokens": offsets[-1],
        "documents": len(offsets) - 1,
        "sha256": digest.hexdigest(),
        "offsets_sha256": file_sha256(offsets_path),
    }


def write_manifest(
    directory: Path,
    splits: Mapping[str, Mapping[str, Any]],
    config: Mapping[str, Any],
    vocab_size: int,
    cache_key: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write manifest.json last, atomically (temp file + fsync + rename)."""
    manifest = {
        "format_version": FORMAT_VERSION,
        "vocab_size": vocab_size,
        "splits": {k: dict(v) for k, v in splits.items()},
        "config": dict(config),
        "cache_key": cache_key,
        **(dict(extra) if extra else {}),
    }
    path = Path(directory) / MANIFEST_FILE
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return path


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a finished dataset directory; CheckpointError if there is none."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {MANIFEST_FILE}: not a prepared dataset or the build did not "
            "finish; run `genlab data prepare` again"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def is_cached(directory: Path, cache_key: str) -> bool:
    """True when `directory` holds a finished dataset built with this exact cache key."""
    try:
        return read_manifest(directory).get("cache_key") == cache_key
    except (CheckpointError, json.JSONDecodeError):
        return False


def verify(directory: Path) -> None:
    """Recompute every file's sha256 against the manifest; CheckpointError on mismatch."""
    manifest = read_manifest(directory)
    for name, entry in manifest["splits"].items():
        for key, file_key in (("sha256", "file"), ("offsets_sha256", "offsets_file")):
            path = Path(directory) / entry[file_key]
            if not path.is_file() or file_sha256(path) != entry[key]:
                raise CheckpointError(
                    f"split {name!r}: {path} is missing or changed since it was written; "
                    "prepare the data again"
                )


class TokenFile:
    """One split's tokens, memory-mapped read-only: pages load on demand, not at open."""

    def __init__(self, path: Path, dtype: str | np.dtype, offsets_path: Path | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"token file {self.path} does not exist; prepare the data again")
        self.dtype = np.dtype(dtype)
        size = self.path.stat().st_size
        # np.memmap cannot map an empty file; an empty split is a zero-length array.
        self.tokens = (
            np.memmap(self.path, dtype=self.dtype, mode="r")
            if size
            else np.zeros(0, dtype=self.dtype)
        )
        self.offsets_path = offsets_path

    @classmethod
    def open(cls, directory: Path, split: str) -> TokenFile:
        """Open `split` of a prepared dataset directory (via its manifest)."""
        manifest = read_manifest(directory)
        if split not in manifest["splits"]:
            raise DataError(
                f"split {split!r} not in dataset {directory}; available: "
                f"{sorted(manifest['splits'])}"
            )
        entry = manifest["splits"][split]
        return cls(
            Path(directory) / entry["file"],
            entry["dtype"],
            Path(directory) / entry["offsets_file"] if "offsets_file" in entry else None,
        )

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def document_offsets(self) -> np.ndarray:
        """Start of each document plus the end (len = documents + 1)."""
        if self.offsets_path is None:
            raise DataError(f"no offsets file for {self.path}; prepare the data again")
        return np.load(self.offsets_path)

    def num_windows(self, block_size: int) -> int:
        """How many distinct start offsets a window of block_size (+1 target) has."""
        return max(len(self) - block_size, 0)

    def windows(self, starts: Sequence[int] | np.ndarray, block_size: int) -> tuple[Any, Any]:
        """(x, y) int64 tensors of shape (B, block_size); y[b, t] = token after x[b, t]."""
        import torch

        starts = np.asarray(starts, dtype=np.int64)
        _check_windows(starts, block_size, len(self), str(self.path))
        # One contiguous slice per window: only those pages are read from disk.
        rows = np.stack([self.tokens[s : s + block_size + 1] for s in starts.tolist()])
        rows = torch.from_numpy(rows.astype(np.int64))  # (B, T+1)
        return rows[:, :-1], rows[:, 1:]


def windows_from_tensor(tokens: Any, starts: Sequence[int], block_size: int) -> tuple[Any, Any]:
    """The same windows cut from an in-memory 1-D tensor (reference and small-data path)."""
    import torch

    starts_t = torch.as_tensor(list(starts), dtype=torch.long)
    _check_windows(starts_t.numpy(), block_size, int(tokens.shape[0]), "in-memory tokens")
    idx = starts_t[:, None] + torch.arange(block_size + 1)  # (B, T+1)
    # index_select on the flat index is ~1000x faster on CPU than tokens[idx] fancy indexing.
    rows = tokens.index_select(0, idx.reshape(-1)).view(idx.shape).long()
    return rows[:, :-1], rows[:, 1:]


def _check_windows(starts: np.ndarray, block_size: int, length: int, where: str) -> None:
    if block_size < 1:
        raise DataError(f"block_size must be >= 1, got {block_size}")
    if length < block_size + 1:
        raise DataError(
            f"{where} has {length} tokens, fewer than block_size + 1 = {block_size + 1}; lower "
            "model.block_size or add data"
        )
    if starts.size and (starts.min() < 0 or starts.max() > length - block_size - 1):
        raise DataError(
            f"window starts must be in [0, {length - block_size - 1}] for {where}, got "
            f"{int(starts.min())}..{int(starts.max())}"
        )


def cache_key(data_config: Mapping[str, Any], files: Iterable[str | Path]) -> str:
    """sha256 of the data config (canonical JSON) and each source file's path, size,
    mtime_ns and content hash. Same inputs -> same key (reuse the prepared dataset); any
    changed setting or file -> a new key (rebuild)."""
    digest = hashlib.sha256()
    canonical = json.dumps(
        data_config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    digest.update(canonical.encode("utf-8"))
    for path in sorted({Path(p).resolve() for p in files}):
        if not path.is_file():
            raise DataError(f"data file {path} does not exist; check data.path")
        stat = path.stat()
        record = f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{file_sha256(path)}"
        digest.update(record.encode("utf-8"))
    return digest.hexdigest()


def default_cache_root() -> Path:
    """$GENLAB_CACHE_DIR, else .cache/genlab/datasets under the current directory: where
    prepared text datasets (prepare.py) and prepared images (image_cache.py) live."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def swap_into_place(tmp: Path, directory: Path, complete: Callable[[Path], bool]) -> None:
    """Rename the finished build `tmp` to `directory`. What is there is replaced (a stale or
    damaged build) unless `complete(directory)` says it is whole: the same build finished by a
    concurrent builder, which is kept and ours dropped."""
    if complete(directory):
        return
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
    try:
        os.replace(tmp, directory)
    except OSError:
        if not complete(directory):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
