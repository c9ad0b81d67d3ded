"""Document-level splits: no leakage, stratification, folds, fraction validation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from genlab import config
from genlab.config import DedupSection, SplitSection
from genlab.data.dedup import deduplicate, jaccard, shingles
from genlab.data.documents import Document
from genlab.data.split import fold_ids, split_documents
from genlab.errors import ConfigError, DataError


def _docs(n, labels=None):
    return [
        Document(
            id=f"d{i}",
            text=f"document number {i}",
            source="s",
            label=None if labels is None else labels[i],
        )
        for i in range(n)
    ]


def test_split_partitions_documents_and_is_seeded():
    docs = _docs(100)
    result = split_documents(docs, SplitSection(val=0.2, test=0.1), seed=3, folds=0)
    ids = [set(d.id for d in part) for part in (result.train, result.val, result.test)]
    assert [len(s) for s in ids] == [70, 20, 10]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == {d.id for d in docs}
    again = split_documents(docs, SplitSection(val=0.2, test=0.1), seed=3, folds=0)
    assert again.ids() == result.ids()
    other = split_documents(docs, SplitSection(val=0.2, test=0.1), seed=4, folds=0)
    assert other.ids()["val"] != result.ids()["val"]


def test_no_near_duplicate_pair_crosses_splits():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    docs = []
    for family in range(30):
        base = [rng.choice(vocab) for _ in range(80)]
        for copy in range(3):  # each family: the base and two lightly edited copies
            words = list(base)
            if copy:
                words[rng.randrange(80)] = "edited"
            docs.append(Document(id=f"f{family}c{copy}", text=" ".join(words), source="s"))
    kept = deduplicate(docs, DedupSection(threshold=0.8), seed=0).kept
    result = split_documents(kept, SplitSection(val=0.2, test=0.2), seed=1, folds=0)
    parts = result.splits()
    families = {name: {d.id.split("c")[0] for d in part} for name, part in parts.items()}
    assert not (families["train"] & families["val"]) and not (families["train"] & families["test"])
    assert not families["val"] & families["test"]
    for a_name, a in parts.items():
        for b_name, b in parts.items():
            if a_name < b_name:
                for x in a:
                    for y in b:
                        assert jaccard(shingles(x.text), shingles(y.text)) < 0.8


def test_stratified_split_keeps_label_proportions():
    labels = ["a"] * 80 + ["b"] * 20
    result = split_documents(_docs(100, labels), SplitSection(val=0.5), seed=0, folds=0)
    assert result.stratified
    assert Counter(d.label for d in result.val) == {"a": 40, "b": 10}
    assert Counter(d.label for d in result.train) == {"a": 40, "b": 10}


def test_stratify_requires_labels():
    with pytest.raises(DataError, match="no label"):
        split_documents(_docs(10), SplitSection(stratify=True), seed=0, folds=0)
    with pytest.raises(DataError, match="stratify=false"):
        split_documents(_docs(10, ["a"] * 9 + ["b"]), SplitSection(val=0.5), seed=0, folds=0)


def test_folds_partition_train_documents():
    labels = ["x", "y"] * 50
    result = split_documents(_docs(100, labels), SplitSection(val=0.2), seed=0, folds=5)
    assert len(result.folds) == len(result.train) == 80
    assert sorted(Counter(result.folds).values()) == [16] * 5
    for fold in range(5):  # stratified folds: each fold keeps the 50/50 labels
        members = [d for d, f in zip(result.train, result.folds) if f == fold]
        assert Counter(d.label for d in members) == {"x": 8, "y": 8}
    assert set(result.ids()["folds"]) == {d.id for d in result.train}
    with pytest.raises(DataError, match="folds"):
        fold_ids(_docs(3), 5, seed=0, stratify=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.split.train=0.9", "data.split.val=0.2"], "fractions must sum to 1"),
        (["data.split.val=0.0"], "data.split.val: input should be greater than 0"),
        (["data.split.test=-0.1"], "data.split.test: input should be greater than or equal"),
        (["data.split.val=0.5", "data.split.test=0.5"], "leave nothing to train on"),
    ],
)
def test_fraction_validation_is_a_one_line_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        config.load(None, overrides)
    assert "\n" not in str(err.value) and len(str(err.value)) <= 300


def test_train_is_the_rest_and_a_consistent_train_is_accepted():
    cfg = config.load(None, ["data.split.val=0.2", "data.split.test=0.1"])
    assert cfg.data.split.train == 0.7
    # A run's config.yaml written before `train` became derived still loads, within 1e-6.
    old = config.load(None, ["data.split.train=0.7", "data.split.val=0.2", "data.split.test=0.1"])
    assert old.data.split == cfg.data.split
    assert "train" not in cfg.to_dict()["data"]["split"]  # derived, not a setting of its own
    config.load(None, ["data.split.train=0.7", "data.split.val=0.2", "data.split.test=0.1000001"])
    with pytest.raises(DataError, match="at least 2"):
        split_documents(_docs(1), SplitSection(), seed=0, folds=0)
