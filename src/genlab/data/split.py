"""Train/val/test split by document, seeded; stratified by label when labels exist; K folds.

Splitting whole documents (never windows of one long token stream) keeps a document's text in
one split. Run deduplication first, so near-copies cannot straddle splits either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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


def split_documents(
    docs: Sequence[Document], options: SplitSection, *, seed: int, folds: int
) -> SplitResult:
    """Split documents into train/val/test by the section's fractions (deterministic for a
    seed); with `folds` >= 2 (data.cv_folds) each train document also gets a fold id."""
    from sklearn.model_selection import train_test_split

    docs = list(docs)
    stratify = _use_stratify(docs, options.stratify)
    needed = 2 + (options.test > 0)
    if len(docs) < needed:
        raise DataError(
            f"need at least {needed} documents to split into train/val"
            f"{'/test' if options.test > 0 else ''}, got {len(docs)}; add more data"
        )
    # Whole-document counts, rounded (at least 1 for a non-zero fraction); integer sizes
    # avoid float artefacts such as 0.2/0.9*90 = 20.000000000000004 -> 21 documents.
    n_test = max(1, round(options.test * len(docs))) if options.test > 0 else 0
    n_val = max(1, round(options.val * len(docs)))
    n_train = len(docs) - n_test - n_val
    if n_train < 1:
        raise DataError(
            f"{len(docs)} documents leave no training documents after val={n_val} and "
            f"test={n_test}; add more data or lower data.split.val / data.split.test"
        )
    index = list(range(len(docs)))
    labels = [d.label for d in docs] if stratify else None
    try:
        rest, test_idx = (index, [])
        if n_test:
            rest, test_idx = train_test_split(
                index, test_size=n_test, random_state=seed, stratify=labels
            )
        rest_labels = [docs[i].label for i in rest] if stratify else None
        train_idx, val_idx = train_test_split(
            rest, test_size=n_val, random_state=seed, stratify=rest_labels
        )
    except ValueError as exc:
        hint = (
            "each label needs enough documents for every split; merge rare labels or set "
            "data.split.stratify=false"
            if stratify
            else "add more documents or change the fractions"
        )
        raise DataError(f"cannot split {len(docs)} documents: {exc}; {hint}") from None
    # Keep the original corpus order inside each split (readable, and stable for windows).
    result = SplitResult(
        train=[docs[i] for i in sorted(train_idx)],
        val=[docs[i] for i in sorted(val_idx)],
        test=[docs[i] for i in sorted(test_idx)],
        stratified=stratify,
    )
    if folds:
        result.folds = fold_ids(result.train, folds, seed, stratify)
    return result


def fold_ids(docs: Sequence[Document], k: int, seed: int, stratify: bool) -> list[int]:
    """Fold id (0..k-1) of each document for K-fold cross-validation (seeded, shuffled).

    Every document is in exactly one fold; stratified folds keep label proportions.
    """
    return label_fold_ids([d.label for d in docs], k, seed, stratify)


def label_fold_ids(labels: Sequence[object], k: int, seed: int, stratify: bool) -> list[int]:
    """`fold_ids` over the labels of the items alone (documents, or images by index)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if k < 2 or k > len(labels):
        raise DataError(
            f"cannot make {k} folds from {len(labels)} training documents; set data.cv_folds "
            f"between 2 and {max(len(labels), 2)}"
        )
    splitter = (
        StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        if stratify
        else KFold(n_splits=k, shuffle=True, random_state=seed)
    )
    ids = [-1] * len(labels)
    try:
        for fold, (_, held_out) in enumerate(splitter.split(list(range(len(labels))), labels)):
            for i in held_out:
                ids[int(i)] = fold
    except ValueError as exc:
        raise DataError(
            f"cannot make {k} stratified folds: {exc}; lower data.cv_folds or set "
            "data.split.stratify=false"
        ) from None
    return ids


def _use_stratify(docs: Sequence[Document], requested: bool | None) -> bool:
    labelled = sum(d.label is not None for d in docs)
    if requested is None:
        return bool(docs) and labelled == len(docs)
    if requested and labelled < len(docs):
        raise DataError(
            f"data.split.stratify=true but {len(docs) - labelled} of {len(docs)} documents have "
            "no label; set data.label_field or data.split.stratify=false"
        )
    return requested
