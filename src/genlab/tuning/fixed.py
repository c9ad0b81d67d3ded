"""A study's fixed settings: everything a trial trains with besides its searched params.

A study records them when it is created (a user attr of the Optuna study, so every process and
machine sharing the storage sees them) and a later `genlab tune` on the same study must bring
the same ones: a rerun with, say, another `train.max_steps` would rank trials trained for 40
steps against trials trained for 30. A change is one ConfigError naming the keys (exit 2);
starting a new study (another --study-dir or tune.study_name) is the way to change them.

What counts: the whole config except the searched keys, the study's own bookkeeping (`name`,
`track.*`, and the `tune:` keys that only say how many trials to run, where and how to pick
them) and how a run reports (`train.progress`, `train.threads`). Of `tune:`, what defines a
trial's value counts: its metric, seeds, objective and cross-validation.
"""

from __future__ import annotations

import json
from typing import Any

from genlab.errors import ConfigError
from genlab.track.flat import flatten

ATTR = "genlab_fixed_config"
TRIAL_TUNE_KEYS = ("metric", "seeds", "objective", "k", "cv")  # what a trial's value means
NOT_FIXED_SECTIONS = ("name", "track", "tune")
NOT_FIXED_KEYS = ("train.progress", "train.threads")  # how a run reports and uses CPUs


def fixed_settings(raw: dict[str, Any], searched: list[str]) -> dict[str, Any]:
    """The flat `section.key` → value settings every trial of the study shares (JSON values).
    `raw`: the base config as plain data; `searched`: the space's keys."""
    tune = raw.get("tune", {})
    kept = {k: v for k, v in raw.items() if k not in NOT_FIXED_SECTIONS}
    kept["tune"] = {k: tune[k] for k in TRIAL_TUNE_KEYS if k in tune}
    flat = flatten(kept)
    out = {
        key: value
        for key, value in flat.items()
        if key not in NOT_FIXED_KEYS and not any(_under(key, s) for s in searched)
    }
    out["searched"] = sorted(searched)
    return json.loads(json.dumps(out, default=str))  # tuples as lists, as the storage keeps them


def check_fixed(study: Any, current: dict[str, Any], where: str) -> None:
    """Record `current` on a new study (or one made before studies recorded it); refuse a
    study created with other fixed settings."""
    recorded = study.user_attrs.get(ATTR)
    if recorded is None:
        study.set_user_attr(ATTR, current)
        return
    keys = recorded.keys() | current.keys()
    changed = sorted(k for k in keys if recorded.get(k, "unset") != current.get(k, "unset"))
    if not changed:
        return
    raise ConfigError(_message(study.study_name, where, changed, recorded, current))


def _message(name: str, where: str, changed: list[str], was: dict, now: dict) -> str:
    """One line (<= 300 chars): the first change with its values, then the other keys."""
    first = f"{changed[0][:60]} {_short(was, changed[0])} -> {_short(now, changed[0])}"
    head = f"study {name[:30]!r} in {where[-50:]!r} was created with other settings: {first}"
    tail = "; use those, or start a new study (another --study-dir or tune.study_name)"
    rest = changed[1:]
    for shown in (len(rest), 3, 1):
        names = ", ".join(rest[:shown]) + (", ..." if len(rest) > shown else "")
        line = head + (f" (and {names})" if rest else "") + tail
        if len(line) <= 300:
            return line
    return (head + f" (and {len(rest)} more)" + tail)[:300]


def _under(key: str, searched: str) -> bool:
    return key == searched or key.startswith(searched + ".")


def _short(settings: dict[str, Any], key: str) -> str:
    if key not in settings:
        return "searched" if key in settings.get("searched", []) else "unset"
    text = json.dumps(settings[key])
    return text if len(text) <= 24 else text[:21] + "..."
