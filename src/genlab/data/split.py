"""Train/val/test split by document, seeded; stratified by label when labels exist; K folds.

Splitting whole documents (never windows of one long token stream) keeps a document's text in
one split. Run deduplication first, so near-copies cannot straddle splits either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genlab.config import SplitSection
from genlab.data.documents import Document
from genlab.errors import DataError


@dataclass
class SplitResult:
    """The documents of each split. `folds[i]` is the fold id of `train[i]` (empty when
    folds are off); fold f's validation set is the train documents with fold id f."""

    train: list[Document]
    val: list[Document]
    test: list[Document]
    folds: list[int] = field(default_factory=list)
    stratified: bool = False

    def splits(self) -> dict[str, list[Document]]:
        """Non-empty splits by name ("train", "val", "test")."""
        named = {"train": self.train, "val": self.val, "test": self.test}
        return {k: v for k, v in named.items() if v}

    def ids(self) -> dict[str, list[str]]:
        """Document ids per split (and "folds": {id: fold}), to store with the dataset."""
        out: dict[str, object] = {k: [d.id for d in v] for k, v in self.splits().items()}
        if self.folds:
            out["folds"] = {d.id: f for d, f in zip(self.train, self.folds)}
        return out  # type: ignore[return-value]


TRAIN, VAL, TEST, UNUSED = 0, 1, 2, -1  # split codes of `Assignment.codes`
SPLIT_NAMES = {TRAIN: "train", VAL: "val", TEST: "test"}


class LabelCoder:
    """Labels as small integers, fed one document at a time (-1: no label). `codes()`
    numbers the labels in sorted order, so the split depends on the labels, not on the order
    they were first seen in. A split needs only these codes, never the texts."""

    def __init__(self) -> None:
        self.vocabulary: dict[str, int] = {}
        self.seen: list[int] = []

    def add(self, label: str | None) -> None:
        if label is None:
            self.seen.append(-1)
        else:
            self.seen.append(self.vocabulary.setdefault(label, len(self.vocabulary)))

    def codes(self) -> np.ndarray:
        order = sorted(self.vocabulary, key=lambda k: k)
        rank = np.full(len(self.vocabulary) + 1, -1, dtype=np.int32)
        for position, label in enumerate(order):
            rank[self.vocabulary[label]] = position
        return rank[np.asarray(self.seen, dtype=np.int64)] if self.seen else rank[:0]


@dataclass
class Assignment:
    """Which split each of n documents (in corpus order) belongs to. `codes[i]` is TRAIN,
    VAL, TEST or UNUSED; `folds[i]` the cross-validation fold of an original train document
    (-1 otherwise; empty when folds are off)."""

    codes: np.ndarray
    folds: np.ndarray
    stratified: bool


def split_documents(
    docs: Sequence[Document], options: SplitSection, *, seed: int, folds: int
) -> SplitResult:
    """Split documents into train/val/test by the section's fractions (deterministic for a
    seed); with `folds` >= 2 (data.cv_folds) each train document also gets a fold id."""
    docs = list(docs)
    coder = LabelCoder()
    for d in docs:
        coder.add(d.label)
    chosen = assign_splits(coder.codes(), options, seed=seed, folds=folds)
    result = SplitResult(
        train=[d for d, c in zip(docs, chosen.codes) if c == TRAIN],
        val=[d for d, c in zip(docs, chosen.codes) if c == VAL],
        test=[d for d, c in zip(docs, chosen.codes) if c == TEST],
        stratified=chosen.stratified,
    )
    if folds:
        result.folds = [int(f) for f, c in zip(chosen.folds, chosen.codes) if c == TRAIN]
    return result


def assign_splits(
    labels: np.ndarray,
    options: SplitSection,
    *,
    seed: int,
    folds: int,
    cv_fold: int | None = None,
) -> Assignment:
    """THE split decision, from label codes alone (one per document in corpus order, -1 for
    none; see LabelCoder): exact whole-document counts per split, seeded, stratified when
    every document has a label (or data.split.stratify says so). With `folds` each train
    document gets a fold id; with `cv_fold` that fold becomes VAL and the held-out val
    documents UNUSED (a tuner never selects on them)."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    stratify = _use_stratify(labels, options.stratify)
    needed = 2 + (options.test > 0)
    if n < needed:
        raise DataError(
            f"need at least {needed} documents to split into train/val"
            f"{'/test' if options.test > 0 else ''}, got {n}; add more data"
        )
    # Whole-document counts, rounded (at least 1 for a non-zero fraction); integer sizes
    # avoid float artefacts such as 0.2/0.9*90 = 20.000000000000004 -> 21 documents.
    n_test = max(1, round(options.test * n)) if options.test > 0 else 0
    n_val = max(1, round(options.val * n))
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DataError(
            f"{n} documents leave no training documents after val={n_val} and "
            f"test={n_test}; add more data or lower data.split.val / data.split.test"
        )
    index = np.arange(n)
    try:
        rest, test_idx = index, index[:0]
        if n_test:
            rest, test_idx = train_test_split(
                index, test_size=n_test, random_state=seed, stratify=labels if stratify else None
            )
        train_idx, val_idx = train_test_split(
            rest, test_size=n_val, random_state=seed, stratify=labels[rest] if stratify else None
        )
    except ValueError as exc:
        hint = (
            "each label needs enough documents for every split; merge rare labels or set "
            "data.split.stratify=false"
            if stratify
            else "add more documents or change the fractions"
        )
        raise DataError(f"cannot split {n} documents: {exc}; {hint}") from None
    codes = np.full(n, TRAIN, dtype=np.int8)
    codes[val_idx] = VAL
    codes[test_idx] = TEST
    fold_of = np.full(n if folds else 0, -1, dtype=np.int32)
    if folds:
        train_sorted = np.sort(train_idx)  # corpus order inside the split
        fold_of[train_sorted] = fold_ids_from_labels(labels[train_sorted], folds, seed, stratify)
        if cv_fold is not None:
            codes[codes == VAL] = UNUSED
            codes[fold_of == cv_fold] = VAL
    return Assignment(codes, fold_of, stratify)


def fold_ids(docs: Sequence[Document], k: int, seed: int, stratify: bool) -> list[int]:
    """Fold id (0..k-1) of each document for K-fold cross-validation (seeded, shuffled).

    Every document is in exactly one fold; stratified folds keep label proportions.
    """
    return label_fold_ids([d.label for d in docs], k, seed, stratify)


def label_fold_ids(labels: Sequence[object], k: int, seed: int, stratify: bool) -> list[int]:
    """`fold_ids` over the labels of the items alone (documents, or images by index)."""
    coder = LabelCoder()
    for label in labels:
        coder.add(None if label is None else str(label))
    return fold_ids_from_labels(coder.codes(), k, seed, stratify).tolist()


def fold_ids_from_labels(labels: np.ndarray, k: int, seed: int, stratify: bool) -> np.ndarray:
    """`fold_ids` from label codes (what a streaming build keeps instead of documents)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(labels)
    if k < 2 or k > n:
        raise DataError(
            f"cannot make {k} folds from {n} training documents; set data.cv_folds "
            f"between 2 and {max(n, 2)}"
        )
    splitter = (
        StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        if stratify
        else KFold(n_splits=k, shuffle=True, random_state=seed)
    )
    ids = np.full(n, -1, dtype=np.int32)
    try:
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(n), labels)):
            ids[held_out] = fold
    except ValueError as exc:
        raise DataError(
            f"cannot make {k} stratified folds: {exc}; lower data.cv_folds or set "
            "data.split.stratify=false"
        ) from None
    return ids


def _use_stratify(labels: np.ndarray, requested: bool | None) -> bool:
    n = len(labels)
    labelled = int(np.count_nonzero(labels >= 0))
    if requested is None:
        return bool(n) and labelled == n
    if requested and labelled < n:
        raise DataError(
            f"data.split.stratify=true but {n - labelled} of {n} documents have "
            "no label; set data.label_field or data.split.stratify=false"
        )
    return requested
