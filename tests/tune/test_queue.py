"""The trial queue's rule, on an in-memory Optuna storage: each slot runs once whoever fills or
claims, a retry runs before a spare copy, and only the slots of the current budget run."""

from __future__ import annotations

import optuna

from genlab.tuning.queue import (
    SLOT,
    budget_slots,
    claim,
    fill_budget,
    fill_grid,
    grid_slots,
    slot_of,
)
from genlab.tuning.storage import Requeue

EVERY = budget_slots(100)


def _study() -> tuple[optuna.Study, optuna.storages.InMemoryStorage]:
    storage = optuna.storages.InMemoryStorage()
    return optuna.create_study(storage=storage, study_name="q"), storage


def _drain(study, storage, accept=EVERY) -> list[str]:
    """Claim and finish trials until none is left; the slots in the order they ran."""
    ran = []
    while (trial_id := claim(study, storage, accept)) is not None:
        trial = storage.get_trial(trial_id)
        ran.append(slot_of(trial))
        study.tell(trial.number, 1.0)
    return ran


def test_two_fills_at_once_still_run_each_slot_once():
    study, storage = _study()
    fill_budget(study, 3)
    # A second process that read the storage before the first one's fill enqueues the same
    # slots again: the spare copies stay WAITING and never run.
    for i in range(3):
        study.enqueue_trial({}, user_attrs={SLOT: str(i)})
    assert _drain(study, storage) == ["0", "1", "2"]
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states.count("WAITING") == 3
    fill_budget(study, 3)  # nothing is missing: nothing is added
    assert len(study.trials) == 6


def test_a_failed_trial_is_rerun_once_by_its_retry_before_a_spare_copy():
    study, storage = _study()
    fill_budget(study, 1)
    study.enqueue_trial({}, user_attrs={SLOT: "0"})  # a spare copy of slot 0
    first = claim(study, storage, EVERY)
    number = storage.get_trial(first).number
    storage.set_trial_state_values(first, optuna.trial.TrialState.FAIL)  # its worker died
    Requeue(max_retry=2)(study, study.trials[number])
    retry = claim(study, storage, EVERY)
    assert storage.get_trial(retry).system_attrs["failed_trial"] == number
    study.tell(storage.get_trial(retry).number, 1.0)
    assert claim(study, storage, EVERY) is None  # the slot is done; the spare never runs


def test_only_the_current_budget_and_grid_run():
    study, storage = _study()
    fill_budget(study, 5)  # an earlier call with a larger budget, interrupted
    assert _drain(study, storage, budget_slots(3)) == ["0", "1", "2"]
    assert _drain(study, storage, budget_slots(5)) == ["3", "4"]

    study, storage = _study()
    old, new = [{"x": 1}, {"x": 2}], [{"x": 2}, {"x": 3}]
    fill_grid(study, old)
    fill_grid(study, new)  # the grid changed: {"x": 2} is already queued, once
    assert len(_drain(study, storage, grid_slots(new))) == 2

    def points(state: str) -> list[dict]:
        return [t.system_attrs["fixed_params"] for t in study.trials if t.state.name == state]

    assert sorted(points("COMPLETE"), key=str) == new and points("WAITING") == [{"x": 1}]
