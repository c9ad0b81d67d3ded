"""Helpers for the tuner tests: a tiny study config and trial-level views of a study."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from testkit import TINY

# 10 steps and one evaluation: about a second per training run on 2 cores (the loop's plots
# at each evaluation cost more than the steps, so evaluate once).
FAST = [
    *TINY,
    "train.max_steps=10",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.sample_every=10",
]


def write_study_config(tmp_path: Path, tune: dict, name: str = "study") -> Path:
    """A YAML file holding only the tune section (the TINY model comes as overrides)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "tune": tune}))
    return path


def load_trials(study_dir: Path, name: str = "study") -> list[optuna.trial.FrozenTrial]:
    db = study_dir / "study.db"
    if db.exists():
        storage = f"sqlite:///{db}"
    else:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def point(trial: optuna.trial.FrozenTrial) -> tuple:
    return tuple(sorted(trial.params.items()))
