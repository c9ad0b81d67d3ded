"""classification_report against a hand-computed case and scikit-learn; the baselines against
their definitions (the chance baseline against simulated random guessing)."""

from __future__ import annotations

import json

import pytest

from genlab.errors import DataError
from genlab.evaluation import classification_report

Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def test_report_matches_hand_computation():
    rep = classification_report(Y_TRUE, Y_PRED)
    # class 0: predicted at 0 (right) and 5 (wrong); true at 0, 1 -> P = 1/2, R = 1/2
    # class 1: predicted at 1 (wrong), 2, 3 (right); true at 2, 3 -> P = 2/3, R = 1
    # class 2: predicted at 4 (right); true at 4, 5 -> P = 1, R = 1/2
    per = rep["per_class"]
    assert per["0"]["precision"] == pytest.approx(0.5) and per["0"]["recall"] == pytest.approx(0.5)
    assert per["1"]["precision"] == pytest.approx(2 / 3) and per["1"]["recall"] == 1.0
    assert per["2"]["precision"] == 1.0 and per["2"]["recall"] == pytest.approx(0.5)
    assert per["1"]["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert [per[c]["support"] for c in "012"] == [2, 2, 2]
    assert rep["macro"]["precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert rep["macro"]["recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # single-label: micro precision = micro recall = accuracy = 4/6
    assert rep["micro"]["precision"] == pytest.approx(4 / 6) == rep["accuracy"]
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert rep["labels"] == [0, 1, 2] and rep["n"] == 6
    json.dumps(rep)  # plain Python types only


def test_explicit_labels_order_and_absent_class():
    rep = classification_report(["b", "a"], ["b", "b"], labels=["b", "a", "z"])
    assert rep["labels"] == ["b", "a", "z"]
    assert rep["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    json.dumps(rep)


def test_report_validation():
    with pytest.raises(DataError, match="same length"):
        classification_report([0, 1], [0])
    with pytest.raises(DataError, match="not in labels"):
        classification_report([0, 1, 5], [0, 1, 1], labels=[0, 1])
    with pytest.raises(DataError):
        classification_report([], [])


def test_every_average_matches_scikit_learn():
    from sklearn.metrics import f1_score, precision_score, recall_score

    y_true = ["a", "a", "a", "a", "b", "b", "c", "c", "c", "d"]
    y_pred = ["a", "b", "a", "c", "b", "b", "c", "a", "c", "a"]
    rep = classification_report(y_true, y_pred)
    for average in ("macro", "weighted", "micro"):
        for name, fn in (("precision", precision_score), ("recall", recall_score),
                         ("f1", f1_score)):  # fmt: skip
            expected = fn(y_true, y_pred, average=average, zero_division=0)
            assert rep[average][name] == pytest.approx(expected), (average, name)
    per_f1 = f1_score(y_true, y_pred, average=None, labels=["a", "b", "c", "d"], zero_division=0)
    assert [rep["per_class"][c]["f1"] for c in "abcd"] == pytest.approx(per_f1.tolist())
    # weighted = per-class values weighted by support, by hand: supports 4, 2, 3, 1
    by_hand = sum(rep["per_class"][c]["f1"] * n for c, n in zip("abcd", (4, 2, 3, 1))) / 10
    assert rep["weighted"]["f1"] == pytest.approx(by_hand)


def test_majority_baseline_by_hand():
    from genlab.evaluation.classify import baselines

    y = [0, 0, 0, 1, 2, 2]
    base = baselines(y, majority=0, labels=[0, 1, 2])
    assert base["majority_accuracy"] == pytest.approx(3 / 6)
    # always 0: class 0 has P = 3/6, R = 1, F1 = 2/3; classes 1 and 2 score 0
    assert base["majority_f1_macro"] == pytest.approx((2 / 3) / 3)
    assert base["chance_accuracy"] == pytest.approx(1 / 3)


def test_chance_baseline_matches_random_guessing():
    import numpy as np
    from sklearn.metrics import f1_score

    from genlab.evaluation.classify import baselines

    rng = np.random.default_rng(0)
    y = rng.choice(4, size=4000, p=[0.55, 0.25, 0.15, 0.05])
    guesses = [rng.integers(0, 4, size=len(y)) for _ in range(20)]
    simulated_acc = np.mean([np.mean(g == y) for g in guesses])
    simulated_f1 = np.mean([f1_score(y, g, average="macro") for g in guesses])
    base = baselines(y.tolist(), majority=0, labels=[0, 1, 2, 3])
    assert base["chance_accuracy"] == pytest.approx(simulated_acc, abs=0.01)
    assert base["chance_f1_macro"] == pytest.approx(simulated_f1, abs=0.01)


def test_confusion_plot_is_written(tmp_path):
    from genlab.evaluation.classify import plot_confusion

    path = plot_confusion([[3, 1], [0, 4]], ["neg", "pos"], tmp_path / "plots" / "confusion.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
