"""Train/val/test split by document, seeded; stratified by label when labels exist; K folds.

Splitting whole documents (never windows of one long token stream) keeps a document's text in
one split. Run deduplication first, so near-copies cannot straddle splits either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from genlab.data.documents import Document
from genlab.errors import ConfigError, DataError

_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SplitOptions:
    """Fractions of documents per split, the seed, stratification and folds.

    stratify: True = keep label proportions (every document needs a label); False = never;
              None = stratify exactly when every document has a label.
    folds:    0 = no cross-validation folds; k >= 2 = assign each train document a fold id
    """

    train: float = 0.9
    val: float = 0.1
    test: float = 0.0
    seed: int = 0
    stratify: bool | None = None
    folds: int = 0

    def __post_init__(self) -> None:
        validate_fractions(self.train, self.val, self.test)
        if self.folds < 0 or self.folds == 1:
            raise ConfigError(
                f"data.split.folds must be 0 (off) or >= 2, got {self.folds}; 5 is usual"
            )


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


def validate_fractions(train: float, val: float, test: float) -> None:
    """Each fraction in [0, 1), they sum to 1 (within 1e-6), and val > 0; ConfigError if not."""
    for name, value in (("train", train), ("val", val), ("test", test)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(
                f"data.split.{name} must be in [0, 1), got {value}; fractions are shares of "
                "the documents, e.g. train=0.8 val=0.1 test=0.1"
            )
    total = train + val + test
    if abs(total - 1.0) > _TOLERANCE:
        raise ConfigError(
            f"data.split fractions must sum to 1, got train={train} + val={val} + test={test} "
            f"= {total:.6g}; adjust them so they add up to 1"
        )
    if val <= 0.0:
        raise ConfigError(
            f"data.split.val must be > 0, got {val}; validation data is needed to detect "
            "overfitting and select checkpoints (e.g. val=0.1)"
        )


def split_documents(
    docs: Sequence[Document], options: SplitOptions = SplitOptions()
) -> SplitResult:
    """Split documents into train/val/test by the option fractions (seeded, deterministic)."""
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
    if n_train < 1 and options.train > 0:
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
                index, test_size=n_test, random_state=options.seed, stratify=labels
            )
        rest_labels = [docs[i].label for i in rest] if stratify else None
        if options.train == 0.0:
            train_idx, val_idx = [], list(rest)
        else:
            train_idx, val_idx = train_test_split(
                rest, test_size=n_val, random_state=options.seed, stratify=rest_labels
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
    if options.folds:
        result.folds = fold_ids(result.train, options.folds, options.seed, stratify)
    return result


def fold_ids(docs: Sequence[Document], k: int, seed: int = 0, stratify: bool = False) -> list[int]:
    """Fold id (0..k-1) of each document for K-fold cross-validation (seeded, shuffled).

    Every document is in exactly one fold; stratified folds keep label proportions.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if k < 2 or k > len(docs):
        raise DataError(
            f"cannot make {k} folds from {len(docs)} training documents; set data.split.folds "
            f"between 2 and {max(len(docs), 2)}"
        )
    labels = [d.label for d in docs]
    splitter = (
        StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        if stratify
        else KFold(n_splits=k, shuffle=True, random_state=seed)
    )
    ids = [-1] * len(docs)
    try:
        for fold, (_, held_out) in enumerate(splitter.split(list(range(len(docs))), labels)):
            for i in held_out:
                ids[int(i)] = fold
    except ValueError as exc:
        raise DataError(
            f"cannot make {k} stratified folds: {exc}; lower data.split.folds or set "
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
