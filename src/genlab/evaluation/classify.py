"""Classification report (precision / recall / F1, macro, weighted, micro and per class, plus
the confusion matrix) via scikit-learn, as plain JSON-able Python types for metrics.json; the
reference baselines (majority class, chance); and the confusion-matrix plot.

Used to score every classifier genlab trains (`task: classify`, during training and in
`genlab eval`) and the feature classifier of the image evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genlab.errors import DataError

__all__ = ["baselines", "classification_report", "plot_confusion"]


def _plain(v: Any) -> Any:
    """numpy scalars -> Python int/float/str so json.dumps accepts them."""
    return v.item() if isinstance(v, np.generic) else v


def classification_report(
    y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Precision, recall and F1 (macro, weighted, micro, per class), accuracy and confusion
    matrix.

    labels fixes the class order (and may list classes absent from the data, which then get
    0 rather than being dropped); by default the sorted union of y_true and y_pred. Classes
    with no predictions (or no true samples) score 0 instead of raising a warning.
    Returns {"n", "labels", "accuracy", "macro": {...}, "weighted": {...}, "micro": {...},
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
    for avg in ("macro", "weighted", "micro"):
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
        "weighted": averages["weighted"],
        "micro": averages["micro"],
        "per_class": per_class,
        "confusion_matrix": [[int(c) for c in row] for row in cm],
    }


def baselines(y_true: Sequence[Any], majority: Any, labels: Sequence[Any]) -> dict[str, float]:
    """Reference points for a classifier's scores on `y_true`:

    - majority_accuracy / majority_f1_macro: always predicting `majority` (the train split's
      most frequent class), scored with `classification_report` itself;
    - chance_accuracy / chance_f1_macro: guessing uniformly at random among the K `labels`,
      in expectation: accuracy 1/K; class c (share p_c of y_true) gets precision p_c and
      recall 1/K, so F1_c = 2 p_c (1/K) / (p_c + 1/K), averaged over the classes."""
    yt = list(y_true)
    always = classification_report(yt, [majority] * len(yt), labels=labels)
    k = len(labels)
    shares = [sum(1 for y in yt if y == c) / len(yt) for c in labels]
    f1 = [2 * p / k / (p + 1 / k) for p in shares]
    return {
        "majority_accuracy": always["accuracy"],
        "majority_f1_macro": always["macro"]["f1"],
        "chance_accuracy": 1.0 / k,
        "chance_f1_macro": sum(f1) / k,
    }


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[Any], path: Any) -> Any:
    """A PNG of the confusion matrix (rows: true class, columns: predicted), each cell's count
    written in it and shaded by its share of the row (recall on the diagonal)."""
    from pathlib import Path

    from genlab.track.figures import new_figure, save_figure

    counts = np.asarray(matrix, dtype=np.int64)  # (K, K)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(labels)
    side = 2.5 + 0.55 * k
    fig, (ax,) = new_figure(side, side)
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    names = [str(c) for c in labels]
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    for i in range(k):
        for j in range(k):
            color = "white" if shares[i, j] > 0.6 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({int(counts.sum())} examples)")
    return save_figure(fig, Path(path), dpi=100)
