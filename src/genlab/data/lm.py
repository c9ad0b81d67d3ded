"""Language-model data: a prepared dataset (genlab.data.prepare: documents cleaned,
deduplicated, split by document, tokenized) → memmapped token streams → training windows.

Training samples are fixed-size windows of `block_size + 1` tokens cut from the train stream.
A window's *sample id* is its slot index `i`; in epoch `e` slot `i` starts at token
`offset_e + i * block_size`, where `offset_e` is a seeded shift in [0, block_size) so epochs
see different window boundaries. The sampler walks a seeded permutation of slots per epoch;
its position (epoch, cursor) and the set of skipped ids are its whole state, so a resumed run
draws exactly the batches an uninterrupted run would, and skips replay whatever the batch size.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.config import DataConfig
from genlab.data.prepare import DOC_SEPARATOR
from genlab.data.sampler import IndexSampler
from genlab.data.tokenizers import Tokenizer
from genlab.errors import DataError

__all__ = ["DOC_SEPARATOR", "LMData", "WindowSampler", "build_lm_data", "val_starts", "windows"]

DATA_RECORD = "data.json"  # in a run directory: the manifest of the dataset it trained on


@dataclass
class LMData:
    """Token streams of a prepared dataset. `train_tokens` / `val_tokens` are usually
    read-only np.memmap arrays (uint16/uint32 on disk): windows are cut from them without
    loading the split into RAM."""

    tokenizer: Tokenizer
    train_tokens: np.ndarray  # (N_train,) token ids
    val_tokens: np.ndarray  # (N_val,) token ids
    block_size: int
    info: dict[str, Any] = field(default_factory=dict)
    dataset: Path | None = None  # the prepared dataset directory the tokens come from

    def write_provenance(self, run_root: Path) -> Path | None:
        """Write `data.json` into a run: the dataset's manifest (cache key, config, files,
        split sizes and hashes) plus where it lives, so a run names the data it trained on."""
        if self.dataset is None:
            return None
        from genlab.data.storage import read_manifest

        record = {"dataset_dir": str(self.dataset.resolve()), **read_manifest(self.dataset)}
        path = Path(run_root) / DATA_RECORD
        path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str), "utf-8")
        return path


def build_lm_data(
    cfg: DataConfig, seed: int, tokenizer: Tokenizer | None = None, console: Any = None
) -> LMData:
    """Prepare (or reuse from the cache) the dataset `cfg` describes and open its train and
    val token files as memmaps. Pass `tokenizer` to reuse a saved one (resume, fine-tuning).

    With cross-validation (data.cv_folds / data.cv_fold), the prepared dataset is the fold's:
    its val split is fold `cv_fold` of the train documents (see genlab.data.corpus)."""
    from rich.console import Console

    from genlab.data.prepare import prepare_dataset

    # No console given: progress bars on stderr only when it is a terminal.
    console = console or Console(stderr=True, quiet=not sys.stderr.isatty())
    prepared = prepare_dataset(cfg, seed, None, console, tokenizer=tokenizer)
    tokenizer = tokenizer if tokenizer is not None else prepared.tokenizer
    train_tokens, val_tokens = prepared.tokens("train"), prepared.tokens("val")
    for name, toks in (("train", train_tokens), ("val", val_tokens)):
        if len(toks) < 2 * cfg.block_size + 2:
            raise DataError(
                f"the {name} split has {len(toks)} tokens, fewer than 2 windows of "
                f"data.block_size={cfg.block_size}; lower data.block_size or add text"
            )
    splits = prepared.manifest["splits"]
    info = {
        "source": cfg.source,
        "dataset": str(prepared.directory),
        "cache_key": prepared.cache_key,
        "documents": {k: v["documents"] for k, v in splits.items()},
        "tokens": {k: v["tokens"] for k, v in splits.items()},
        "val_bytes": int(splits["val"].get("bytes", 0)),
        "vocab_size": tokenizer.vocab_size,
        "val_ids": _split_ids(prepared.directory).get("val", []),
    }
    return LMData(tokenizer, train_tokens, val_tokens, cfg.block_size, info, prepared.directory)


def _split_ids(directory: Path) -> dict[str, Any]:
    path = directory / "split_ids.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class WindowSampler:
    """Training windows: sample id `i` is slot `i`, starting at `offset_e + i * block_size` in
    epoch `e` (`offset_e` a seeded shift in [0, block_size), so epochs see different window
    boundaries while an id keeps naming the same stretch of text)."""

    def __init__(self, n_tokens: int, block_size: int, seed: int):
        self.block_size = block_size
        self.seed = seed
        # Slot i of any epoch must fit: offset (< block_size) + i*bs + bs + 1 <= n_tokens.
        num_slots = n_tokens // block_size - 1
        if num_slots < 1:
            raise DataError(
                f"the train split ({n_tokens} tokens) is shorter than two windows of "
                f"data.block_size={block_size}; lower data.block_size or add text"
            )
        self.index = IndexSampler(num_slots, seed)
        self._offsets: dict[int, int] = {}

    @property
    def skipped(self) -> set[int]:
        return self.index.skipped

    def offset(self, epoch: int) -> int:
        if epoch not in self._offsets:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7_919)
            self._offsets = {epoch: int(torch.randint(0, self.block_size, (1,), generator=g))}
        return self._offsets[epoch]

    def next_batch(self, batch_size: int) -> tuple[list[int], list[int]]:
        """The next `batch_size` (sample id, token start) pairs, skipping skipped ids."""
        ids, epochs = self.index.next_batch(batch_size)
        starts = [self.offset(e) + i * self.block_size for i, e in zip(ids, epochs)]
        return ids, starts

    def state_dict(self) -> dict[str, Any]:
        return self.index.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index.load_state_dict(state)


def windows(tokens: np.ndarray, starts: list[int], block_size: int) -> tuple[torch.Tensor, ...]:
    """Inputs and next-token targets for windows starting at `starts`: two (B, T) int64."""
    idx = np.asarray(starts)[:, None] + np.arange(block_size + 1)[None, :]  # (B, T+1)
    # Fancy indexing reads only the touched pages of a memmap; ids are stored as uint16/32.
    chunk = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def val_starts(n_tokens: int, block_size: int, n_windows: int) -> list[int]:
    """Evenly spaced, deterministic validation windows (at most every non-overlapping one)."""
    last = n_tokens - block_size - 1
    n = max(1, min(n_windows, last // block_size + 1))
    return np.linspace(0, last, n).astype(np.int64).tolist()
