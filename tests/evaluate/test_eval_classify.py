"""classification_report against a hand-computed case."""

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
