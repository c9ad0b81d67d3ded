"""Each sampler and pruner `tune:` names is the one the study runs with, and does its job:
model-based samplers propose points themselves after their startup trials, QMC walks the
scrambled Sobol sequence, ASHA and Hyperband stop bad trials at their rungs."""

from __future__ import annotations

import math
from typing import get_args

import optuna
import pytest
from scipy.stats import qmc
from tunekit import FAST, load_trials, write_study_config

from genlab.tuning import run_study
from genlab.tuning.samplers import PRUNERS, SAMPLERS, resolve_method, trial_seed
from genlab.tuning.schema import TuneConfig

LR, DROPOUT = (1e-3, 1e-2), (0.0, 0.2)
SPACE = {  # two dimensions: CMA-ES falls back to independent sampling on one
    "optim.lr": {"type": "float", "low": LR[0], "high": LR[1], "log": True},
    "model.dropout": {"type": "float", "low": DROPOUT[0], "high": DROPOUT[1]},
}


def test_trial_seeds_differ_across_trials_and_neighbouring_study_seeds():
    tune = TuneConfig(method="random")
    seeds = {(base, n): trial_seed(tune, base, n) for base in (1, 2, 3) for n in range(50)}
    assert len(set(seeds.values())) == len(seeds)  # no trial of study 1 is one of study 2
    assert trial_seed(tune, 1, 7) == seeds[1, 7]  # and each is reproducible
    assert {trial_seed(TuneConfig(method="qmc"), 1, n) for n in range(5)} == {1}


def test_the_tables_name_exactly_the_methods_and_pruners_the_schema_accepts():
    fields = TuneConfig.model_fields
    assert set(SAMPLERS) == set(get_args(fields["method"].annotation))
    assert set(PRUNERS) == set(get_args(fields["pruner"].annotation))


def _in_range(trial: optuna.trial.FrozenTrial) -> bool:
    lr, dropout = trial.params["optim.lr"], trial.params["model.dropout"]
    return LR[0] <= lr <= LR[1] and DROPOUT[0] <= dropout <= DROPOUT[1]


@pytest.mark.parametrize(
    "method, sampler, proposal_attr",
    [
        # Each model-based sampler leaves its own mark on the trials it proposed itself
        # (TPE's joint model; TPE one param at a time is checked below).
        ("tpe", optuna.samplers.TPESampler, "tpe:relative_params:0"),
        ("gp", optuna.samplers.GPSampler, "gp:relative_params:0"),
        ("cmaes", optuna.samplers.CmaEsSampler, "cma:generation"),
    ],
)
def test_model_based_sampler_proposes_after_its_startup_trial(
    method, sampler, proposal_attr, tmp_path, opened_studies, no_run_plots
):
    tune = {"method": method, "n_trials": 3, "startup_trials": 1, "seed": 5, "space": SPACE}
    tune["multivariate"] = method == "tpe"
    result = run_study(write_study_config(tmp_path, tune), FAST, tmp_path / "s")

    assert type(opened_studies[0].sampler) is sampler
    trials = load_trials(tmp_path / "s")
    assert result.n_complete == 3 and all(_in_range(t) for t in trials)
    # The startup trial is random; the later ones come from the sampler's model.
    assert proposal_attr not in trials[0].system_attrs
    assert all(proposal_attr in t.system_attrs for t in trials[1:])
    assert len({t.params["optim.lr"] for t in trials}) == 3


def test_tpe_one_param_at_a_time_is_random_search_until_its_startup_trials_end(
    tmp_path, opened_studies, no_run_plots
):
    tune = {"method": "tpe", "n_trials": 4, "startup_trials": 2, "seed": 5, "space": SPACE}
    result = run_study(write_study_config(tmp_path, tune), FAST, tmp_path / "s")

    sampler = opened_studies[0].sampler
    assert type(sampler) is optuna.samplers.TPESampler and not sampler._multivariate
    trials = load_trials(tmp_path / "s")
    assert result.n_complete == 4 and all(_in_range(t) for t in trials)
    # Trial n draws with its own seed (trial_seed): the startup trials are exactly what
    # Optuna's RandomSampler draws with that seed (params in the order the config file lists
    # them: model.dropout, optim.lr); after them, TPE's own proposals are not.
    for t in trials:
        seed = trial_seed(TuneConfig(method="tpe"), 5, t.number)
        twin = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        probe = twin.ask()
        drawn = {
            "model.dropout": probe.suggest_float("model.dropout", *DROPOUT),
            "optim.lr": probe.suggest_float("optim.lr", *LR, log=True),
        }
        same = all(t.params[k] == pytest.approx(v, rel=1e-12) for k, v in drawn.items())
        assert same == (t.number < 2), t.number


def test_qmc_walks_the_scrambled_sobol_sequence(tmp_path, opened_studies, no_run_plots):
    tune = {"method": "qmc", "n_trials": 3, "seed": 5, "space": SPACE}
    result = run_study(write_study_config(tmp_path, tune), FAST, tmp_path / "s")

    assert type(opened_studies[0].sampler) is optuna.samplers.QMCSampler
    trials = load_trials(tmp_path / "s")
    assert result.n_complete == 3 and all(_in_range(t) for t in trials)
    # Trial 0 fixes the search space (sampled independently); trial k >= 1 is point k - 1 of
    # scipy's scrambled Sobol sequence with the sampler's seed, one dimension per param in
    # name order (model.dropout, optim.lr), mapped onto the ranges (optim.lr on a log scale).
    sobol = qmc.Sobol(d=2, scramble=True, seed=5).random(len(trials) - 1)
    for t, (u_dropout, u_lr) in zip(trials[1:], sobol):
        lr = math.exp(math.log(LR[0]) + u_lr * (math.log(LR[1]) - math.log(LR[0])))
        assert t.params["optim.lr"] == pytest.approx(lr, rel=1e-9)
        assert t.params["model.dropout"] == pytest.approx(DROPOUT[1] * u_dropout, abs=1e-12)


# lr 1e-2 learns fastest in 12 steps; the others have a higher loss at every evaluation.
PRUNE_STEPS = ["train.max_steps=12", "train.eval_every=2", "train.checkpoint_every=100"]


@pytest.mark.parametrize(
    "pruner, cls, lrs",
    [
        ("asha", optuna.pruners.SuccessiveHalvingPruner, [1e-2, 3e-3, 1e-5, 3e-6]),
        ("hyperband", optuna.pruners.HyperbandPruner, [1e-2, 3e-3, 1e-3, 1e-5, 3e-6, 1e-6]),
    ],
)
def test_pruner_stops_worse_trials_at_a_rung(
    pruner, cls, lrs, tmp_path, opened_studies, no_run_plots
):
    tune = {
        "method": "grid",  # the best point runs first, so the later ones have a bar to meet
        "pruner": pruner,
        "pruning": {"warmup_steps": 0},  # prune from the first evaluation on
        "space": {"optim.lr": {"type": "categorical", "choices": lrs}},
    }
    result = run_study(write_study_config(tmp_path, tune), [*FAST, *PRUNE_STEPS], tmp_path / "s")

    assert type(opened_studies[0].pruner) is cls
    trials = load_trials(tmp_path / "s")
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert trials[0].state.name == "COMPLETE" and trials[0].user_attrs["steps"] == 12
    assert result.n_pruned == len(pruned) >= len(lrs) // 2
    # Rungs sit at min_resource * reduction_factor**k = 2 * 3**k steps (eval_every = 2,
    # warmup 1 evaluation): a pruned trial stopped at one, well before max_steps.
    for t in pruned:
        assert t.user_attrs["steps"] in (2, 6) and max(t.intermediate_values) in (2, 6)


AUTO_CASES = {
    # space, n_trials -> the sampler `auto` must pick
    "numeric, bounded": (SPACE, 30, "gp"),
    "numeric, at the GP limit": (SPACE, 200, "gp"),
    "numeric, over the GP limit": (SPACE, 201, "tpe"),
    "numeric, no trial budget": (SPACE, None, "tpe"),
    "a categorical param": (
        {**SPACE, "optim.name": {"type": "categorical", "choices": ["adamw", "sgd"]}},
        30,
        "tpe",
    ),
    "a conditional param": (
        {**SPACE, "optim.momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"x": 1}}},
        30,
        "tpe",
    ),
}


@pytest.mark.parametrize("case", sorted(AUTO_CASES))
def test_auto_is_gp_for_bounded_numeric_spaces_and_tpe_otherwise(case):
    space, n_trials, expected = AUTO_CASES[case]
    tune = TuneConfig(space=space, n_trials=n_trials, timeout=None if n_trials else 60)
    assert tune.method == "auto"  # the default
    assert resolve_method(tune)[0] == expected
    # Several workers (or a shared database) always get TPE: concurrent GP fits propose the
    # same point, TPE's constant liar keeps workers apart.
    assert resolve_method(tune, parallel=True)[0] == "tpe"
    # An explicit method is never second-guessed.
    assert resolve_method(TuneConfig(space=space, method="random"))[0] == "random"


def test_the_reason_counts_in_words():
    one = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    assert resolve_method(TuneConfig(space=one, n_trials=1)) == (
        "gp",
        "auto: 1 numeric param, 1 trial",
    )


def test_the_default_study_on_a_numeric_space_runs_gp_and_says_so(
    tmp_path, opened_studies, no_run_plots
):
    from rich.console import Console

    tune = {"n_trials": 3, "startup_trials": 1, "seed": 5, "space": SPACE}
    console = Console(record=True, width=200)
    result = run_study(write_study_config(tmp_path, tune), FAST, tmp_path / "s", console=console)

    assert type(opened_studies[0].sampler) is optuna.samplers.GPSampler
    trials = load_trials(tmp_path / "s")
    assert all("gp:relative_params:0" in t.system_attrs for t in trials[1:])  # GP proposed them
    assert "sampler: gp (auto: 2 numeric params, 3 trials)" in console.export_text()
    assert result.sampler == "gp (auto: 2 numeric params, 3 trials)"


@pytest.mark.slow
@pytest.mark.multiproc
def test_the_default_study_with_several_workers_runs_tpe_and_says_so(
    tmp_path, opened_studies, no_run_plots
):
    from rich.console import Console

    tune = {"n_trials": 2, "seed": 5, "space": SPACE}
    console = Console(record=True, width=200)
    path = write_study_config(tmp_path, tune)
    result = run_study(path, FAST, tmp_path / "s", workers=2, console=console)

    assert type(opened_studies[0].sampler) is optuna.samplers.TPESampler
    assert "sampler: tpe (auto: several workers or a shared database)" in console.export_text()
    assert result.n_complete == 2 and result.sampler.startswith("tpe (auto: several workers")
