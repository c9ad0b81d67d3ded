"""Classification report (precision / recall / F1, macro, micro and per class, plus the
confusion matrix) via scikit-learn, as plain JSON-able Python types for metrics.json.

Used to score a downstream classifier, e.g. the feature classifier's labels for generated
images against the classes they were conditioned on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genlab.errors import DataError

__all__ = ["classification_report"]


def _plain(v: Any) -> Any:
    """numpy scalars -> Python int/float/str so json.dumps accepts them."""
    return v.item() if isinstance(v, np.generic) else v


def classification_report(
    y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Precision, recall and F1 (macro, micro, per class), accuracy and confusion matrix.

    labels fixes the class order (and may list classes absent from the data, which then get
    0 rather than being dropped); by default the sorted union of y_true and y_pred. Classes
    with no predictions (or no true samples) score 0 instead of raising a warning.
    Returns {"n", "labels", "accuracy", "macro": {...}, "micro": {...},
    "per_class": {label: {"precision", "recall", "f1", "support"}}, "confusion_matrix"}, where
    confusion_matrix[i][j] counts samples of true class labels[i] predicted as labels[j].
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.ndim != 1 or yp.ndim != 1 or len(yt) != len(yp) or len(yt) == 0:
        raise DataError(
            f"y_true and y_pred must be non-empty 1-D sequences of the same length, got "
            f"shapes {yt.shape} and {yp.shape}; pass one true and one predicted label per sample"
        )
    if labels is None:
        labels_arr = np.unique(np.concatenate([yt, yp]))
    else:
        labels_arr = np.asarray(labels)
        if (
            labels_arr.ndim != 1
            or len(labels_arr) == 0
            or len(np.unique(labels_arr)) != len(labels_arr)
        ):
            raise DataError(
                f"labels must be a non-empty list of distinct classes, got {list(labels)!r:.80}; "
                f"leave it None to use the classes found in y_true and y_pred"
            )
        unknown = sorted({_plain(v) for v in np.concatenate([yt, yp])} - set(labels_arr.tolist()))
        if unknown:
            raise DataError(
                f"y_true/y_pred contain classes not in labels: {unknown[:10]}; add them to "
                f"labels or leave labels None"
            )

    p, r, f, support = precision_recall_fscore_support(
        yt, yp, labels=labels_arr, average=None, zero_division=0
    )
    averages = {}
    for avg in ("macro", "micro"):
        ap, ar, af, _ = precision_recall_fscore_support(
            yt, yp, labels=labels_arr, average=avg, zero_division=0
        )
        averages[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}

    label_list = [_plain(v) for v in labels_arr]
    per_class = {
        str(label): {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(label_list)
    }
    cm = confusion_matrix(yt, yp, labels=labels_arr)
    return {
        "n": len(yt),
        "labels": label_list,
        "accuracy": float(accuracy_score(yt, yp)),
        "macro": averages["macro"],
        "micro": averages["micro"],
        "per_class": per_class,
        "confusion_matrix": [[int(c) for c in row] for row in cm],
    }
