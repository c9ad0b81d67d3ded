"""The study's trial budget, kept in the shared storage as a queue of slots.

A study runs exactly `tune.n_trials` trials (or each grid point once) however many workers on
however many machines take part, because a worker never creates a trial: it claims one.

- `fill` enqueues one WAITING trial per budget slot no trial holds yet: slots `"0"`..`"N-1"`
  for a sampled search (no params: the sampler decides when the trial is claimed), the point
  itself for a grid (its params fixed). The slot is the trial's `slot` user attr.
- `claim` moves one WAITING trial to RUNNING with the storage's atomic WAITING -> RUNNING
  update (a row lock in a database), so two workers never get the same trial.

Workers that fill at the same moment may enqueue the same slot twice. Every worker reads the
same rule from the same storage: a slot is taken once any of its trials is past WAITING (a
failed trial that was re-queued no longer holds it: its retry does), and of several WAITING
copies only the first (a retry before a fresh placeholder, then the lowest number) is claimed.
The other copies stay WAITING and are never run; reports leave WAITING trials out. A claim
that loses a race re-reads the storage before it tries again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from genlab.errors import require
from genlab.tuning.storage import retried_in

SLOT = "slot"  # user attr: the budget slot a trial fills
GRID_POINT = "grid_point"  # user attr of enqueued grid trials (kept by retries)


def point_key(params: dict[str, Any]) -> str:
    """A grid point's slot: its params, in a stable text form."""
    return json.dumps(sorted((k, repr(v)) for k, v in params.items()))


def slot_of(trial: Any) -> str:
    """A trial's slot; a trial from before slots existed holds one of its own (or, for an
    enqueued grid point, its point's)."""
    slot = trial.user_attrs.get(SLOT)
    if slot is not None:
        return str(slot)
    if trial.user_attrs.get(GRID_POINT):
        return point_key(trial.system_attrs.get("fixed_params", trial.params))
    return f"#{trial.number}"


def live(trials: list[Any]) -> list[Any]:
    """Trials that hold their slot: all but failed ones that were re-queued."""
    retried = retried_in(trials)
    fail = require("optuna", "tune").trial.TrialState.FAIL
    return [t for t in trials if not (t.state == fail and t.number in retried)]


def fill_budget(study: Any, n_trials: int) -> None:
    """Enqueue placeholders until slots 0..n_trials-1 are all held (trials from before slots
    existed count towards the budget too)."""
    held = {slot_of(t) for t in live(study.get_trials(deepcopy=False))}
    legacy = sum(1 for s in held if s.startswith("#"))
    for i in range(max(0, n_trials - legacy)):
        if str(i) not in held:
            study.enqueue_trial({}, user_attrs={SLOT: str(i)})


def fill_one_more(study: Any) -> None:
    """One more placeholder for a search bounded by time only (tune.timeout)."""
    held = {slot_of(t) for t in live(study.get_trials(deepcopy=False))}
    i = 0
    while str(i) in held:
        i += 1
    study.enqueue_trial({}, user_attrs={SLOT: str(i)})


def fill_grid(study: Any, points: list[dict[str, Any]]) -> None:
    """Enqueue every grid point no trial holds yet."""
    held = {slot_of(t) for t in live(study.get_trials(deepcopy=False))}
    for p in points:
        key = point_key(p)
        if key not in held:
            study.enqueue_trial(p, user_attrs={SLOT: key, GRID_POINT: True})


def budget_slots(n_trials: int) -> Callable[[str], bool]:
    """The slots a budget of n_trials covers (a queue filled for a larger budget earlier
    keeps its extra placeholders; they wait until a budget covers them)."""
    return lambda slot: not slot.isdigit() or int(slot) < n_trials


def grid_slots(points: list[dict[str, Any]]) -> Callable[[str], bool]:
    """The slots of the current grid (points of an earlier, other grid are not run)."""
    keys = {point_key(p) for p in points}
    return lambda slot: slot in keys


def next_waiting(trials: list[Any], accept: Callable[[str], bool]) -> Any | None:
    """The WAITING trial the rule above says runs next (among slots `accept` takes), or None."""
    waiting_state = require("optuna", "tune").trial.TrialState.WAITING
    holding = live(trials)
    taken = {slot_of(t) for t in holding if t.state != waiting_state}
    first: dict[str, Any] = {}
    waiting = [
        t
        for t in holding
        if t.state == waiting_state and slot_of(t) not in taken and accept(slot_of(t))
    ]

    def order(t: Any) -> tuple[int, int]:  # a retry first, then the lowest number
        return (-len(t.system_attrs.get("retry_history", [])), t.number)

    for t in sorted(waiting, key=order):
        first.setdefault(slot_of(t), t)
    return min(first.values(), key=lambda t: t.number) if first else None


def claim(study: Any, storage: Any, accept: Callable[[str], bool]) -> int | None:
    """Move the next WAITING trial (of a slot `accept` takes) to RUNNING for this worker and
    return its id in the storage; None when there is none."""
    optuna = require("optuna", "tune")
    study_id = storage.get_study_id_from_name(study.study_name)
    while True:
        trial = next_waiting(study.get_trials(deepcopy=False), accept)
        if trial is None:
            return None
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.RUNNING):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker took it and finished it: read again


def unfinished(trials: list[Any]) -> bool:
    """Whether a live trial is still RUNNING (maybe on another machine)."""
    running = require("optuna", "tune").trial.TrialState.RUNNING
    return any(t.state == running for t in live(trials))
