"""The study summary's noise check: the config x run residual, and the verdict on the best
trials' spread."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from genlab.tuning.noise import check_noise, residual_sd


def test_residual_is_zero_for_purely_additive_effects_and_matches_the_2x2_closed_form():
    configs, runs = np.array([0.0, 0.3, -0.2]), np.array([1.0, 2.5, 0.7, 3.0])
    assert residual_sd(configs[:, None] + runs[None, :]) == pytest.approx(0.0, abs=1e-12)
    # 2 x 2: each double-centered residual is ±(x11 - x12 - x21 + x22) / 4, one degree of
    # freedom, so the sd is |x11 - x12 - x21 + x22| / 2.
    x = np.array([[3.1, 2.9], [3.4, 3.6]])
    assert residual_sd(x) == pytest.approx(abs(3.1 - 2.9 - 3.4 + 3.6) / 2)
    assert residual_sd(np.array([[1.0, 2.0]])) is None


def _trial(value: float, runs: list[float]) -> SimpleNamespace:
    names = [f"all-seed{1337 + i}" for i in range(len(runs))]
    return SimpleNamespace(value=value, user_attrs={"values": dict(zip(names, runs))})


def test_close_best_trials_are_called_noise_and_far_ones_signal():
    # Seed 2 shifts every config by +0.2 (cancels); configs move ±0.05 against each other.
    wobble = [0.05, -0.05, 0.05, -0.05, 0.05, -0.05]
    means = [3.00, 3.01, 3.02, 3.02, 3.03, 3.50]
    trials = [_trial(m, [m - w / 2, m + 0.2 + w / 2]) for m, w in zip(means, wobble)]
    close = check_noise(trials, [], "minimize")
    table = np.array(
        [[t.user_attrs["values"][k] for k in sorted(t.user_attrs["values"])] for t in trials]
    )
    assert close.noise == pytest.approx(residual_sd(table) / math.sqrt(2))
    assert close.top == 5 and close.spread == pytest.approx(0.03)
    assert close.weak and "mostly chance" in close.line("val/loss")

    far = check_noise([_trial(m * 10, r) for m, r in zip(means, [[0, 0]] * 6)], [], "minimize")
    assert far.spread == pytest.approx(0.3) and not far.weak
    assert "stronger than the noise" in far.line("val/loss")


def test_one_run_per_trial_and_no_final_stage_says_noise_is_not_measured():
    check = check_noise([_trial(3.0, [3.0]), _trial(3.1, [3.1])], [], "minimize")
    assert check.noise is None and "not measured" in check.line("val/loss")
