"""Language-model data: documents → split by document → token streams → training windows.

Training samples are fixed-size windows of `block_size + 1` tokens cut from the train stream.
A window's *sample id* is its slot index `i`; in epoch `e` slot `i` starts at token
`offset_e + i * block_size`, where `offset_e` is a seeded shift in [0, block_size) so epochs
see different window boundaries. The sampler walks a seeded permutation of slots per epoch;
its position (epoch, cursor) and the set of skipped ids are its whole state, so a resumed run
draws exactly the batches an uninterrupted run would, and skips replay whatever the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genlab.config import DataConfig
from genlab.data.documents import Document
from genlab.data.sampler import IndexSampler
from genlab.data.sources import load_documents
from genlab.data.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer
from genlab.errors import DataError

DOC_SEPARATOR = "\n\n"


@dataclass
class LMData:
    tokenizer: Tokenizer
    train_tokens: np.ndarray  # (N_train,) int64
    val_tokens: np.ndarray  # (N_val,) int64
    block_size: int
    info: dict[str, Any] = field(default_factory=dict)


def split_documents(
    docs: list[Document], val_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """Seeded split by whole documents, so no document contributes to both sides."""
    if len(docs) < 2:
        raise DataError(
            f"the corpus has {len(docs)} document(s); at least 2 are needed to hold one out "
            "for validation; add text (a file is cut into documents at blank lines)"
        )
    order = np.random.default_rng(seed).permutation(len(docs))
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    val_idx = set(order[:n_val].tolist())
    train = [d for i, d in enumerate(docs) if i not in val_idx]
    val = [d for i, d in enumerate(docs) if i in val_idx]
    return train, val


def cv_fold_documents(
    docs: list[Document], folds: int, fold: int, seed: int
) -> tuple[list[Document], list[Document]]:
    """Fold `fold` of a seeded K-fold over whole documents as validation, the rest as train."""
    from sklearn.model_selection import KFold

    if len(docs) < folds:
        raise DataError(
            f"data.cv_folds={folds} needs at least {folds} train documents, got {len(docs)}; "
            "use fewer folds or more documents"
        )
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    train_idx, val_idx = list(splitter.split(docs))[fold]
    return [docs[i] for i in train_idx], [docs[i] for i in val_idx]


def build_tokenizer(kind: str, train_texts: list[str]) -> Tokenizer:
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer.train(train_texts)
    raise DataError(f"data.tokenizer {kind!r} is not known; use 'byte' or 'char'")


def build_lm_data(cfg: DataConfig, seed: int, tokenizer: Tokenizer | None = None) -> LMData:
    """Load, split and tokenize. Pass `tokenizer` to reuse a saved one (resume, generate)."""
    docs = load_documents(cfg.source)
    train_docs, val_docs = split_documents(docs, cfg.val_fraction, seed)
    if cfg.cv_folds and cfg.cv_fold is not None:
        train_docs, val_docs = cv_fold_documents(train_docs, cfg.cv_folds, cfg.cv_fold, seed)
    train_text = DOC_SEPARATOR.join(d.text for d in train_docs)
    val_text = DOC_SEPARATOR.join(d.text for d in val_docs)
    if tokenizer is None:
        tokenizer = build_tokenizer(cfg.tokenizer, [train_text])
    train_tokens = np.asarray(tokenizer.encode(train_text), dtype=np.int64)
    val_tokens = np.asarray(tokenizer.encode(val_text), dtype=np.int64)
    for name, toks in (("train", train_tokens), ("val", val_tokens)):
        if len(toks) < 2 * cfg.block_size + 2:
            raise DataError(
                f"the {name} split has {len(toks)} tokens, fewer than 2 windows of "
                f"data.block_size={cfg.block_size}; lower data.block_size or add text"
            )
    info = {
        "source": cfg.source,
        "documents": {"train": len(train_docs), "val": len(val_docs)},
        "tokens": {"train": len(train_tokens), "val": len(val_tokens)},
        "val_bytes": len(val_text.encode("utf-8")),
        "vocab_size": tokenizer.vocab_size,
        "val_ids": [d.id for d in val_docs],
    }
    return LMData(tokenizer, train_tokens, val_tokens, cfg.block_size, info)


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
    chunk = torch.from_numpy(tokens[idx])
    return chunk[:, :-1], chunk[:, 1:]


def val_starts(n_tokens: int, block_size: int, n_windows: int) -> list[int]:
    """Evenly spaced, deterministic validation windows (at most every non-overlapping one)."""
    last = n_tokens - block_size - 1
    n = max(1, min(n_windows, last // block_size + 1))
    return np.linspace(0, last, n).astype(np.int64).tolist()
