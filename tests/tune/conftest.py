"""Fixtures for the tuner tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_run_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip each training run's PNG plots (~1 s of a 10-step run's 1.2 s): for tests about
    what the search does, not about a run's outputs (tests/test_train.py checks the plots)."""
    import genlab.track.plots

    monkeypatch.setattr(genlab.track.plots, "plot_run", lambda *args, **kwargs: None)


@pytest.fixture
def opened_studies(monkeypatch: pytest.MonkeyPatch) -> list:
    """The optuna studies `run_study` opens (in this process), to inspect their sampler and
    pruner."""
    import genlab.tuning.runner as runner

    real, studies = runner._open_study, []

    def spy(*args, **kwargs):
        study, storage = real(*args, **kwargs)
        studies.append(study)
        return study, storage

    monkeypatch.setattr(runner, "_open_study", spy)
    return studies
