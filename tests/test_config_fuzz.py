"""Fuzzing the config loader: thousands of mutated configs and override strings, from a seeded
generator, must give a valid config or genlab's own ConfigError, whose every line is at most
300 characters. A crash (TypeError, RecursionError, OverflowError, ...) or a hang fails."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from genlab import config
from genlab.errors import ConfigError

EXAMPLES = sorted(Path(__file__).resolve().parents[1].glob("examples/*.yaml"))
KEYS = [
    "seed", "name", "data.source", "data.split", "data.split.val", "data.split.test",
    "data.tokenizer", "data.vocab_size", "data.block_size", "data.clean.min_chars",
    "data.clean.drop_patterns", "data.dedup.threshold", "data.scale_range", "data.augment",
    "model.family", "model.n_layer", "model.n_head", "model.n_embd", "model.dropout",
    "model.init_std", "model.vae.beta", "model.gan.lr_d", "optim.lr", "optim.name",
    "optim.beta1", "schedule.warmup_steps", "train.max_steps", "train.batch_size",
    "train.grad_accum", "train.threads", "train.early_stopping", "train.early_stopping.metric",
    "guard.ladder", "guard.inject", "guard.window", "guard.collapse.mode_ratio",
    "finetune.init_from", "finetune.method", "finetune.lora.rank", "tune.space",
    "tune.method", "tune.n_trials", "tune.space.optim.lr", "tune.cv.folds", "no.such.key",
    "data", "train", "",
]  # fmt: skip
VALUES = [
    "0", "-1", "1e400", "-1e400", ".inf", "-.inf", ".nan", "2**64", "18446744073709551616",
    "99999999999999999999999999999999999", "0.5", "1.0000001", "true", "null", "~", "''",
    "'x'", "[]", "[1, 2]", "{}", "{a: 1}", "[[[[[[]]]]]]", "{val: 2}", "{val: .nan}",
    "[{step: 1, kind: nan_loss}]", "[{step: .inf}]", "{low: 1, high: 0}", "&a [*a]",
    "{type: float, low: 1e-5, high: 1e-1, log: true, step: .inf}", "'\\x00'", "'../../etc'",
    "[a, b", "{unclosed", "@bad", "`tick`", "!!python/object:os.system ls", "*undefined",
    "{type: int, low: 1, high: 1000000000000, step: 1}", "'é🎉'", "{kind: crash}", "0x10",
]  # fmt: skip


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.15:
        return rng.choice([0, -1, 1, 2**63, 2**64 + 1, 10**400, -(10**30)])
    if roll < 0.3:
        return rng.choice([0.0, -0.5, 1e308, 1e-320, float("inf"), float("-inf"), float("nan")])
    if roll < 0.45:
        return rng.choice(["", "x", "../..", "a/b", "\x00", "é" * 500, "adamw", "cosine"])
    if roll < 0.55:
        return rng.choice([True, False, None])
    if depth > 3:
        return None
    if roll < 0.75:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["val", "test", "train", "low", "high", "type", "step", "kind", "x", "metric"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _paths(raw: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(raw, dict):
        for key, value in raw.items():
            out += _paths(value, (*prefix, key))
    return out


def _mutate(raw: dict, rng: random.Random) -> dict:
    """A copy of `raw` with 1-3 random edits: a value replaced, a key removed, or added."""
    out = copy.deepcopy(raw)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(out)
        if not paths:
            break
        path = rng.choice(paths)
        node = out
        for key in path[:-1]:
            node = node[key]
        action = rng.random()
        if action < 0.6:
            node[path[-1]] = _random_value(rng)
        elif action < 0.8:
            del node[path[-1]]
        else:
            node[rng.choice(["zz", "lrr", path[-1] + "_"])] = _random_value(rng)
    return out


def _check(fn, *args) -> None:
    try:
        fn(*args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            assert len(line) <= 300, line[:400]


def _bases() -> list[dict]:
    bases = [config.load(p).to_dict() for p in EXAMPLES]
    return [*bases, config.load(None).to_dict()]


def test_two_thousand_mutated_configs_give_a_config_or_a_config_error():
    rng = random.Random(20261202)
    bases = _bases()
    for _ in range(2000):
        raw = _mutate(rng.choice(bases), rng)
        _check(config.from_dict, raw, "fuzz")


def test_a_thousand_override_strings_give_a_config_or_a_config_error():
    rng = random.Random(7)
    for _ in range(1000):
        overrides = [
            f"{rng.choice(KEYS)}{rng.choice(['=', '=', '=', '', '.x='])}{rng.choice(VALUES)}"
            for _ in range(rng.randint(1, 3))
        ]
        _check(config.load, None, overrides)


@pytest.mark.parametrize(
    "text",
    [
        "junk: &a [*a]",
        "x: " + "[" * 600 + "]" * 600,
        "x:\n" + "".join(" " * (2 * i) + f"k{i}:\n" for i in range(1, 300)),
        "\n".join(
            [f"a: &a [{', '.join(['lol'] * 9)}]"]
            + [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
            + ["name: *i"]
        ),
        "optim: {lr: .inf}",
        "seed: 18446744073709551616",
        "data: {split: 7, val_fraction: 0.1}",
        "tune: {method: grid, space: {optim.lr: {type: float, low: 0.1, high: 1, step: .inf}}}",
        "\t\x00",
        "a: b: c",
        "- just\n- a list",
    ],
)
def test_hostile_yaml_files_are_one_line_errors(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    message = str(exc.value)
    assert all(len(line) <= 300 for line in message.splitlines())
    assert len(message) <= 2000
