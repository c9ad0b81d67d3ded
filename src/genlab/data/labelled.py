"""Labelled data for `task: classify`: the class list, the checks a labelled split must pass,
class weights, label subsampling, and texts as padded token rows.

Texts go through the same `split_corpus` as every text run (read → clean → dedup → split,
stratified by label; cross-validation folds of the train documents). Each document becomes
one row of its first `data.block_size` tokens, right-padded with id 0. Classes are the labels
of the train split, sorted; a label that only occurs in val or test could never be learned
and is an error, as is a class with fewer train documents than cross-validation folds.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from genlab.config import ExperimentConfig
from genlab.data.documents import Document
from genlab.data.tokenizers import Tokenizer
from genlab.errors import DataError

CLASSES_FILE = "classes.json"  # in a classify run directory: class names, counts, weights


def require_labels(docs: Sequence[Document], label_field: str | None) -> None:
    """Every document must carry a non-empty label."""
    missing = next((d for d in docs if d.label is None or not str(d.label).strip()), None)
    if missing is None:
        return
    where = f"data.label_field {label_field!r}" if label_field else "its folder"
    raise DataError(
        f"document {missing.position[:100]!r} has no label (from {where}); task classify needs "
        "a class for every document: fill it in, drop the record, or move the file into a "
        "class sub-folder"
    )


def class_list(train: Sequence[str], held_out: dict[str, Sequence[str]]) -> list[str]:
    """The sorted classes of the train labels; every held-out label must be one of them."""
    classes = sorted(set(train))
    if len(classes) < 2:
        raise DataError(
            f"the train split has {len(classes)} class ({classes[:1]}); a classifier needs at "
            "least 2: add documents of other classes"
        )
    for split, labels in held_out.items():
        unseen = sorted(set(labels) - set(classes))
        if unseen:
            raise DataError(
                f"label {unseen[0][:60]!r} occurs in the {split} split but not in train, so it "
                "cannot be learned; add train examples of it (keep data.split.stratify on) or "
                "drop it"
            )
    return classes


def check_folds(labels: Sequence[str], folds: int) -> None:
    """Stratified folds need every class in every fold: at least `folds` train examples."""
    if not folds:
        return
    count, label = min((n, c) for c, n in Counter(labels).items())
    if count < folds:
        raise DataError(
            f"class {label[:60]!r} has {count} train examples, fewer than the {folds} "
            "cross-validation folds (tune.cv.folds), so some fold would not hold it; lower "
            "tune.cv.folds or add examples of that class"
        )


def subsample_per_class(labels: Sequence[object], fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a seeded `fraction` of each class (at least one per class):
    classify.label_fraction, the share of labels a label-efficiency experiment keeps."""
    labels_arr = np.asarray([str(v) for v in labels])
    if fraction >= 1.0:
        return np.arange(len(labels_arr))
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in sorted(set(labels_arr.tolist())):
        members = np.flatnonzero(labels_arr == c)
        n = max(1, math.ceil(fraction * len(members)))
        keep += rng.permutation(members)[:n].tolist()
    return np.sort(np.asarray(keep, dtype=np.int64))


def balanced_weights(label_ids: Sequence[int], n_classes: int) -> torch.Tensor:
    """n / (K * n_c) per class c (scikit-learn's 'balanced'), from the train labels."""
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=n_classes)
    return torch.tensor(len(label_ids) / (n_classes * counts), dtype=torch.float32)


@dataclass
class TextRows:
    """One split as token rows. ids (N, T) int64 right-padded with 0, lengths (N,) real
    tokens (>= 1), labels (N,) class indices; the documents they came from."""

    ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    docs: list[Document] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, T'), lengths (B,)) of those rows, cut to their longest text."""
        lengths = self.lengths[list(index)]
        return self.ids[list(index), : int(lengths.max())], lengths


def encode_texts(
    tokenizer: Tokenizer, texts: Sequence[str], block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each text's first `block_size` token ids, right-padded with 0: ids (N, T), lengths (N,).
    A text with no tokens keeps one padding token (length 1), so pooling has a position."""
    encoded = [tokenizer.encode(t)[:block_size] or [0] for t in texts]
    width = max((len(e) for e in encoded), default=1)
    ids = torch.zeros(len(encoded), width, dtype=torch.int64)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e, dtype=torch.int64)
    return ids, torch.tensor([len(e) for e in encoded], dtype=torch.int64)


@dataclass
class LabelledText:
    """The classify task's text data: classes, the tokenizer, and rows per split."""

    classes: list[str]
    tokenizer: Tokenizer
    splits: dict[str, TextRows]
    train_counts: dict[str, int]


def build_labelled_text(cfg: ExperimentConfig, tokenizer: Tokenizer | None) -> LabelledText:
    """Split and tokenize `cfg.data` for classification. `tokenizer`: the run's (resume,
    eval) or the pretrained model's; None trains data.tokenizer on the train split."""
    from genlab.data.corpus import split_corpus
    from genlab.data.prepare import build_tokenizer

    data = cfg.data
    with warnings.catch_warnings():  # too small a class for the folds: check_folds says so
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        corpus = split_corpus(data, cfg.seed, labels_from_folders=True)
    require_labels([*corpus.train, *corpus.val, *corpus.test], data.label_field)
    folded = corpus.train + corpus.val if data.cv_fold is not None else corpus.train
    check_folds([str(d.label) for d in folded], data.cv_folds)
    held = {"val": corpus.val, "test": corpus.test}
    classes = class_list(
        [str(d.label) for d in corpus.train],
        {k: [str(d.label) for d in v] for k, v in held.items()},
    )
    fraction = cfg.classify.label_fraction
    keep = subsample_per_class([d.label for d in corpus.train], fraction, cfg.seed)
    train = [corpus.train[i] for i in keep]
    if tokenizer is None:
        tokenizer = build_tokenizer(data, [d.text for d in train])
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for name, docs in {"train": train, **held}.items():
        ids, lengths = encode_texts(tokenizer, [d.text for d in docs], data.block_size)
        labels = torch.tensor([index[str(d.label)] for d in docs], dtype=torch.int64)
        splits[name] = TextRows(ids, lengths, labels, list(docs))
    counts = Counter(str(d.label) for d in train)
    return LabelledText(classes, tokenizer, splits, {c: counts[c] for c in classes})
