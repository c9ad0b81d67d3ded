"""A bad search space is one clean ConfigError, one line per problem, before any trial."""

from __future__ import annotations

import pytest
from tunekit import FAST, write_study_config

from genlab import config
from genlab.errors import ConfigError
from genlab.tuning import run_study
from genlab.tuning.schema import TuneConfig
from genlab.tuning.space import build_space

LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}


def _load(tune: dict) -> config.ExperimentConfig:
    return config.from_dict({"tune": tune})


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"type": "float", "low": 0.1, "high": 0.01}, ["optim.lr", "low=0.1", "high=0.01", "swap"]),
        ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, ["optim.lr", "low=0.0", "> 0"]),
        ({"type": "categorical", "choices": []}, ["optim.lr", "choices", "[]"]),
        ({"type": "float", "low": 1e-3}, ["optim.lr", "high=None"]),
        ({"type": "int", "low": 1, "high": 2.5}, ["optim.lr", "high=2.5", "whole"]),
        ({"type": "float", "low": 1e-3, "high": 1e-2, "log": True, "step": 1e-3}, ["step"]),
        ({"type": "categorical", "choices": [1, 2], "low": 0}, ["categorical", "low"]),
    ],
)
def test_schema_rejects_bad_ranges(spec, words):
    with pytest.raises(ConfigError) as exc:
        _load({"space": {"optim.lr": spec}})
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_stratified_cv_is_a_clear_error_for_text():
    with pytest.raises(ConfigError, match=r"stratified.*text data has none.*kfold"):
        _load({"cv": {"folds": 3, "kind": "stratified"}})


def test_unknown_and_out_of_range_keys_are_all_reported():
    cfg = config.load(None, FAST)
    tune = TuneConfig.model_validate(
        {
            "space": {
                "optim.lrr": LR,
                "model.dropout": {"type": "float", "low": 0.0, "high": 1.5},
                "seed": {"type": "int", "low": 1, "high": 3},
                "optim.momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"x.y": 1}},
            }
        }
    )
    with pytest.raises(ConfigError) as exc:
        build_space(tune, cfg.to_dict())
    lines = str(exc.value).splitlines()
    assert lines[0] == "invalid search space: 4 problems"
    text = str(exc.value)
    assert "tune.space.optim.lrr" in text and "did you mean 'optim.lr'" in text
    assert "tune.space.model.dropout: value 1.5" in text
    assert "tune.space.seed" in text and "tune.seeds" in text
    assert "unknown key 'x.y'" in text


def test_grid_needs_finite_values():
    cfg = config.load(None, FAST)
    tune = TuneConfig.model_validate({"method": "grid", "space": {"optim.lr": LR}})
    with pytest.raises(ConfigError, match=r"optim\.lr: grid search needs .* step"):
        build_space(tune, cfg.to_dict())


def test_grid_enumerates_conditional_points_once():
    cfg = config.load(None, FAST)
    tune = TuneConfig.model_validate(
        {
            "method": "grid",
            "space": {
                # listed before the key it depends on: the space orders it after
                "optim.momentum": {
                    "type": "categorical",
                    "choices": [0.5, 0.9],
                    "when": {"optim.name": "sgd"},
                },
                "optim.name": {"type": "categorical", "choices": ["adamw", "sgd"]},
                "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
            },
        }
    )
    points = build_space(tune, cfg.to_dict()).grid()
    assert len(points) == 3 * 3  # (adamw, sgd+0.5, sgd+0.9) x 3 dropouts
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)
    assert {p["model.dropout"] for p in points} == {0.0, 0.1, 0.2}
    assert all(("optim.momentum" in p) == (p["optim.name"] == "sgd") for p in points)


@pytest.mark.parametrize(
    ("tune", "match"),
    [
        ({"space": {"optim.lrr": LR}, "n_trials": 2}, "did you mean 'optim.lr'"),
        ({"space": {"optim.lr": LR}}, "needs a budget"),
        ({"n_trials": 2}, "tune.space is empty"),
    ],
)
def test_run_study_fails_before_any_trial(tmp_path, tune, match):
    path = write_study_config(tmp_path, tune)
    with pytest.raises(ConfigError, match=match):
        run_study(path, FAST, tmp_path / "s", workers=1)
    assert not (tmp_path / "s").exists()
