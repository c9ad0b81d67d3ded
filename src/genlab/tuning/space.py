"""The search space: validation against the base config, sampling, grid enumeration.

Parameter names in the Optuna study are the config keys themselves (`optim.lr`), so a trial's
params apply to a config by setting those dotted keys. Conditional parameters (`when:`) are
sampled after the keys they depend on, so a condition is always decided when it is checked.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from genlab import config as config_mod
from genlab.errors import ConfigError
from genlab.tuning.schema import ParamSpec, TuneConfig

_MISSING = object()
# A grid is enqueued in full before the first trial; past this many points it is not a search
# anyone will finish (and enumerating 1e12 points would exhaust memory or never return).
MAX_GRID_POINTS = 10_000
# Keys the tuner sets itself for every training run of a trial.
RESERVED = ("seed", "data.cv_folds", "data.cv_fold", "tune", "name")


@dataclass(frozen=True)
class SearchSpace:
    """The space's parameters in sampling order, with the base config they apply to."""

    params: list[tuple[str, ParamSpec]]
    base: dict[str, Any]  # the resolved base config, as plain data

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample (or read the enqueued) values of the parameters whose conditions hold."""
        chosen: dict[str, Any] = {}
        for key, spec in self.params:
            if self._active(spec, chosen):
                chosen[key] = _suggest_one(trial, key, spec)
        return chosen

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the grid once; a conditional key only appears where it is active.
        ConfigError (before enumerating) when there would be more than MAX_GRID_POINTS."""
        points: list[dict[str, Any]] = [{}]
        counts: list[str] = []
        for key, spec in self.params:
            n = grid_size(key, spec)
            counts.append(f"{key}: {n:,}")
            size = sum(n if self._active(spec, point) else 1 for point in points)
            if size > MAX_GRID_POINTS:
                raise ConfigError(
                    f"tune.space: a grid of at least {size:,} points is above the limit of "
                    f"{MAX_GRID_POINTS:,} ({'; '.join(counts)} values); use coarser steps or "
                    "fewer choices, or tune.method=random with tune.n_trials"
                )
            values = grid_values(key, spec)
            grown: list[dict[str, Any]] = []
            for point in points:
                if self._active(spec, point):
                    grown.extend({**point, key: v} for v in values)
                else:
                    grown.append(point)
            points = grown
        return points

    def apply(self, params: dict[str, Any], **fixed: Any) -> dict[str, Any]:
        """The base config as plain data with `params` and dotted `fixed` keys set."""
        raw = copy.deepcopy(self.base)
        for key, value in {**params, **fixed}.items():
            set_dotted(raw, key, value)
        return raw

    def _active(self, spec: ParamSpec, chosen: dict[str, Any]) -> bool:
        for key, wanted in spec.when.items():
            if key in chosen:
                actual = chosen[key]
            elif key in dict(self.params):
                return False  # a searched key that is itself inactive here
            else:
                actual = get_dotted(self.base, key)
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if actual not in allowed:
                return False
        return True


def build_space(tune: TuneConfig, base: dict[str, Any]) -> SearchSpace:
    """Order and validate the space against the base config; every problem in one ConfigError
    (one line each) before any trial runs."""
    problems: list[str] = []
    if not tune.space:
        problems.append(
            "tune.space is empty; add the keys to search, e.g. "
            "optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"
        )
    for key, spec in tune.space.items():
        problems.extend(_check_key(key, spec, tune, base))
    if not problems:
        ordered, cycle = _order(tune.space)
        if cycle:
            problems.append(
                f"tune.space: the `when:` conditions of {', '.join(cycle)} depend on each other "
                "in a cycle; make one of them unconditional"
            )
        space = SearchSpace(ordered, base)
        if tune.method == "grid" and not problems:
            for key, spec in ordered:
                try:
                    grid_size(key, spec)
                except ConfigError as exc:
                    problems.append(str(exc))
            if not problems:
                try:
                    space.grid()
                except ConfigError as exc:
                    problems.append(str(exc))
    if problems:
        if len(problems) == 1:
            raise ConfigError(f"invalid search space: {problems[0]}")
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid search space: {len(problems)} problems\n{lines}")
    return space


def _check_key(key: str, spec: ParamSpec, tune: TuneConfig, base: dict[str, Any]) -> list[str]:
    where = f"tune.space.{key}"
    if any(key == r or key.startswith(r + ".") for r in RESERVED):
        return [
            f"{where}: {key!r} is set by the tuner itself (seeds, folds, names); "
            "remove it from the space (use tune.seeds / tune.cv instead)"
        ]
    problems = []
    for probe in _probes(spec):
        raw = copy.deepcopy(base)
        try:
            set_dotted(raw, key, probe)
            config_mod.from_dict(raw, origin=where)
        except ConfigError as exc:
            detail = str(exc).split(": ", 1)[-1]
            problems.append(f"{where}: value {probe!r} does not fit the config: {detail}")
            break  # one line per key: the first failing probe says enough
    for cond in spec.when:
        if cond not in tune.space and get_dotted(base, cond) is _MISSING:
            problems.append(
                f"{where}.when: unknown key {cond!r}; name a key of the config or of "
                "tune.space, e.g. optim.name"
            )
    return problems


def _probes(spec: ParamSpec) -> list[Any]:
    """Values that must each make a valid config: the range ends, or every choice."""
    if spec.type == "categorical":
        return list(spec.choices or [])
    if spec.type == "int":
        return [int(spec.low), int(spec.high)]
    return [float(spec.low), float(spec.high)]


def _order(space: dict[str, ParamSpec]) -> tuple[list[tuple[str, ParamSpec]], list[str]]:
    """Parameters with their conditions' searched keys first (stable otherwise)."""
    done: list[tuple[str, ParamSpec]] = []
    pending = dict(space)
    while pending:
        placed = dict(done)
        ready = [
            k for k, s in pending.items() if all(c in placed or c not in space for c in s.when)
        ]
        if not ready:
            return done, sorted(pending)
        for k in ready:
            done.append((k, pending.pop(k)))
    return done, []


def grid_size(key: str, spec: ParamSpec) -> int:
    """How many values grid search walks for one parameter, without listing them."""
    if spec.type == "categorical":
        return len(spec.choices or [])
    low, high = spec.low, spec.high
    if spec.type == "int":
        return (int(high) - int(low)) // int(spec.step or 1) + 1
    if spec.step is None:
        raise ConfigError(
            f"tune.space.{key}: grid search needs a finite set of values, got a float range "
            f"[{low}, {high}] without step; add e.g. step: {(high - low) / 4 or 1:g}, or use "
            "type: categorical with choices"
        )
    return math.floor((high - low) / spec.step + 1e-9) + 1


def grid_values(key: str, spec: ParamSpec) -> list[Any]:
    """The finite set of values grid search walks for one parameter (at most
    MAX_GRID_POINTS of them: check grid_size first)."""
    n = grid_size(key, spec)
    if n > MAX_GRID_POINTS:
        raise ConfigError(
            f"tune.space.{key}: grid search over {n:,} values is above the limit of "
            f"{MAX_GRID_POINTS:,} points; use a coarser step, or tune.method=random with "
            "tune.n_trials"
        )
    if spec.type == "categorical":
        return list(spec.choices or [])
    if spec.type == "int":
        return list(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))
    # Rounding keeps 0.1 + 2 * 0.1 from becoming 0.30000000000000004 in names and CSVs.
    return [round(spec.low + i * spec.step, 12) for i in range(n)]


def _suggest_one(trial: Any, key: str, spec: ParamSpec) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(key, spec.choices)
    if spec.type == "int":
        step = int(spec.step or 1)
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


def get_dotted(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"{key}: {prefix} is a value ({child!r}), not a section; search {prefix} itself"
            )
        node = child
    node[parts[-1]] = value
