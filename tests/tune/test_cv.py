"""Cross-validation: folds never leak, and pruning compares trials fold by fold."""

from __future__ import annotations

import csv

import pytest
from tunekit import FAST, load_trials, write_study_config

from genlab import config
from genlab.data.corpus import split_corpus
from genlab.data.lm import build_lm_data
from genlab.tuning import run_study
from genlab.tuning.objective import run_config, trial_runs
from genlab.tuning.space import build_space


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_partition_the_train_documents(folds):
    cfg = config.load(None, FAST)
    whole = split_corpus(cfg.data, cfg.seed)
    train_docs, held_out = whole.train, whole.val
    seen: list[str] = []
    for k in range(folds):
        data = cfg.data.model_copy(update={"cv_folds": folds, "cv_fold": k})
        fold = split_corpus(data, cfg.seed)
        fit, val = fold.train, fold.val
        ids = [d.id for d in val]
        assert not {d.id for d in fit} & set(ids)  # a fold's train and val are disjoint
        assert {d.id for d in fit} | set(ids) == {d.id for d in train_docs}
        seen.extend(ids)
    assert len(seen) == len(set(seen))  # no document in two folds' validation sets
    assert set(seen) == {d.id for d in train_docs}  # the folds cover the train documents
    assert not set(seen) & {d.id for d in held_out}  # the held-out split stays out


def test_trial_run_configs_select_each_fold_and_never_leak():
    tune = {"cv": {"folds": 3}, "n_trials": 1,
            "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}}  # fmt: skip
    cfg = config.from_dict(config.apply_overrides({"tune": tune}, FAST))
    space = build_space(cfg.tune, cfg.to_dict())
    val_sets = []
    for run in trial_runs(cfg.tune, cfg.seed):
        rc = run_config(space, {"optim.lr": 2e-3}, run, cfg.tune.cv.folds)
        assert (rc.data.cv_folds, rc.data.cv_fold, rc.seed) == (3, run.fold, cfg.seed)
        val_sets.append(set(build_lm_data(rc.data, rc.seed).info["val_ids"]))
    assert all(not (a & b) for i, a in enumerate(val_sets) for b in val_sets[i + 1 :])


def test_cv_study_records_each_fold_and_prunes_fold_by_fold(tmp_path):
    tune = {
        "method": "random",
        "n_trials": 3,
        "cv": {"folds": 3},
        "pruner": "median",
        "pruning": {"startup_trials": 1, "warmup": 0},
        "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    }
    path = write_study_config(tmp_path, tune)
    result = run_study(path, FAST, tmp_path / "s", workers=1)
    trials = load_trials(tmp_path / "s")
    for t in trials:
        # Steps are "folds done" (1, 2), never training steps: fold k meets fold k.
        assert set(t.intermediate_values) <= {1, 2}
        assert len(t.intermediate_values) >= 1
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    for t in complete:
        folds = [t.user_attrs["values"][f"fold{k}-seed1337"] for k in range(3)]
        assert t.value == pytest.approx(sum(folds) / 3)
        assert t.intermediate_values[1] == pytest.approx(folds[0])
        assert t.intermediate_values[2] == pytest.approx((folds[0] + folds[1]) / 2)
    rows = list(csv.DictReader(result.trials_csv.open()))
    assert {"value:fold0-seed1337", "value:fold1-seed1337", "value:fold2-seed1337"} <= set(rows[0])
    assert result.n_complete + result.n_pruned == 3


def test_wilcoxon_sees_each_fold_on_its_own_at_its_fold_index(tmp_path, no_run_plots):
    tune = {
        "method": "random",
        "n_trials": 2,
        "cv": {"folds": 3},
        "pruner": "wilcoxon",
        "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    }
    result = run_study(write_study_config(tmp_path, tune), FAST, tmp_path / "s", workers=1)
    trials = load_trials(tmp_path / "s")
    assert result.n_complete + result.n_pruned == 2
    for t in trials:
        # Step k is fold k's own value (the test pairs it with the best trial's fold k).
        folds = t.user_attrs["values"]
        assert t.intermediate_values == {
            k: pytest.approx(folds[f"fold{k}-seed1337"]) for k in range(len(folds))
        }
