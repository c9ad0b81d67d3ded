"""Labelled data for task classify: stratified splits and folds keep the class shares, labels
come from a field or from class folders, the built-in stdlib-topics set, class weights and
label subsampling against independent derivations, and the bad-input errors."""

from __future__ import annotations

from collections import Counter

import pytest
from clskit import TINY_CLASSIFY, write_labelled_csv

from genlab import config
from genlab.data.corpus import split_corpus
from genlab.data.labelled import balanced_weights, build_labelled_text, subsample_per_class
from genlab.errors import ConfigError, DataError

COUNTS = {"math": 60, "files": 30, "net": 10}  # unbalanced on purpose


def _cfg(source, *extra):
    return config.load(None, [*TINY_CLASSIFY, f"data.source={source}", *extra])


def test_stratified_splits_keep_class_shares(tmp_path):
    write_labelled_csv(tmp_path / "d.csv", COUNTS)
    data = build_labelled_text(_cfg(tmp_path / "d.csv"), None)
    total = sum(COUNTS.values())
    sizes = {name: len(rows) for name, rows in data.splits.items()}
    assert sizes == {"train": 60, "val": 20, "test": 20}
    for name, rows in data.splits.items():
        got = Counter(data.classes[int(i)] for i in rows.labels)
        for cls, n in COUNTS.items():
            # each split holds its share of every class, to within one document
            assert abs(got[cls] - n * sizes[name] / total) <= 1, (name, cls, got)
    assert data.classes == ["files", "math", "net"]  # sorted train labels
    assert data.train_counts == {"files": 18, "math": 36, "net": 6}


def test_cross_validation_folds_are_disjoint_and_stratified(tmp_path):
    write_labelled_csv(tmp_path / "d.csv", COUNTS)
    cfg = _cfg(tmp_path / "d.csv", "data.cv_folds=3")
    folds = [
        split_corpus(
            config.load(None, [*TINY_CLASSIFY, f"data.source={tmp_path / 'd.csv'}",
                               "data.cv_folds=3", f"data.cv_fold={k}"]).data,
            cfg.seed,
        )
        for k in range(3)
    ]  # fmt: skip
    held = [{d.id for d in f.val} for f in folds]
    everything = {d.id for d in folds[0].train} | held[0]
    assert set.union(*held) == everything and sum(map(len, held)) == len(everything)
    for f in folds:
        assert not {d.id for d in f.train} & {d.id for d in f.val}  # no document in both
        got = Counter(d.label for d in f.val)
        for cls, n in {"math": 36, "files": 18, "net": 6}.items():
            assert abs(got[cls] - n / 3) <= 1


def test_labels_from_class_folders(tmp_path):
    for cls, n in COUNTS.items():
        (tmp_path / "docs" / cls).mkdir(parents=True)
        for i, (_, text, _) in enumerate(write_labelled_csv(tmp_path / "x.csv", {cls: n})):
            (tmp_path / "docs" / cls / f"{i}.txt").write_text(text)
    cfg = config.load(None, [*TINY_CLASSIFY[:-6], f"data.source={tmp_path / 'docs'}",
                             "task=classify", "data.dedup.near=false"])  # fmt: skip
    data = build_labelled_text(cfg, None)
    assert data.classes == ["files", "math", "net"]
    assert sum(len(r) for r in data.splits.values()) == 100
    for rows in data.splits.values():  # every document's label is its folder's name
        for doc, label in zip(rows.docs, rows.labels):
            assert f"/{data.classes[int(label)]}/" in doc.source


def test_the_builtin_stdlib_topics_set():
    from genlab.data.stdlib_topics import TOPICS, stdlib_topics

    docs = stdlib_topics()
    assert docs == stdlib_topics()  # deterministic
    counts = Counter(d.label for d in docs)
    assert set(counts) == set(TOPICS) and len(docs) >= 900
    assert max(counts.values()) / min(counts.values()) < 6  # unbalanced, not degenerate
    assert all(len(d.text) >= 80 and d.label for d in docs)
    assert len({d.text for d in docs}) == len(docs)  # no docstring carries two labels
    # C signatures ("group([group1, ...]) -> str") are cut: names are (nearly) never in the text
    named = [d for d in docs if d.text.startswith(d.id.rsplit(".", 1)[-1] + "(")]
    assert len(named) <= len(docs) // 100


def test_balanced_weights_match_scikit_learn():
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    labels = [0] * 6 + [1] * 3 + [2]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert balanced_weights(labels, 3).tolist() == pytest.approx(expected.tolist())


def test_label_fraction_keeps_a_share_of_every_class():
    labels = ["a"] * 50 + ["b"] * 9 + ["c"]
    keep = subsample_per_class(labels, 0.1, seed=3)
    got = Counter(labels[i] for i in keep)
    assert got == {"a": 5, "b": 1, "c": 1}  # ceil(10%), at least one each
    assert list(keep) == sorted(keep) and list(keep) == list(subsample_per_class(labels, 0.1, 3))


def test_bad_labelled_data_is_a_one_line_error(tmp_path):
    write_labelled_csv(tmp_path / "d.csv", {"math": 20, "files": 20, "net": 1})
    # A class of one document lands in val or test only (no stratification asked for): find
    # a seed that puts it there.
    for seed in range(50):
        cfg = _cfg(tmp_path / "d.csv", "data.split.stratify=false", f"seed={seed}")
        if "net" not in {d.label for d in split_corpus(cfg.data, seed).train}:
            break
    with pytest.raises(DataError, match=r"label 'net' occurs in the (val|test) split but not"):
        build_labelled_text(cfg, None)
    write_labelled_csv(tmp_path / "e.csv", {"math": 20, "files": 20, "net": 4})
    folds = _cfg(tmp_path / "e.csv", "data.cv_folds=5", "data.cv_fold=0")
    with pytest.raises(DataError, match=r"class 'net' has \d train examples, fewer than the 5"):
        build_labelled_text(folds, None)
    with pytest.raises(DataError, match=r"field 'kind' \(data.label_field\) not found"):
        build_labelled_text(_cfg(tmp_path / "e.csv", "data.label_field=kind"), None)
    rows = "".join(f"word{i} and more,{'x' if i != 7 else ''}\n" for i in range(12))
    (tmp_path / "f.csv").write_text("text,label\n" + rows)
    with pytest.raises(DataError, match="has no label"):
        build_labelled_text(_cfg(tmp_path / "f.csv"), None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.source=python-docs"], "has no labels"),
        (["data.source=r.csv", "data.label_field=null"], "reads each record's class"),
        (["model.family=gan", "data.source=stdlib-topics"], "is text but model.family"),
        (["model.family=gpt", "data.source=digits"], "is an image dataset"),
        (["model.family=vae", "data.source=digits", "classify.pooling=last"], "pooling"),
        (["data.source=stdlib-topics", "train.grad_accum=2"], "grad_accum"),
        (["data.source=stdlib-topics", "classify.head_hidden=8"], "head=mlp"),
    ],
)
def test_incompatible_settings_fail_at_load_time(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, [*TINY_CLASSIFY, *overrides])


def test_classify_settings_need_task_classify_and_stratified_cv_needs_labels():
    with pytest.raises(ConfigError, match="applies to task classify"):
        config.load(None, ["classify.class_weights=balanced"])
    with pytest.raises(ConfigError, match="text data has none"):
        config.load(None, ["tune.cv.folds=3", "tune.cv.kind=stratified"])
    cfg = config.load(None, [*TINY_CLASSIFY, "data.source=r.csv", "tune.cv.folds=3",
                             "tune.cv.kind=stratified"])  # fmt: skip
    assert cfg.tune.cv.kind == "stratified"
