"""The config reference (`genlab config --show`, docs/CONFIG.md) comes from the schema: every
key is listed with its default and range as the schema holds them, every key outside `tune:`
has a meaning, and the checked-in page is what the command prints now."""

from __future__ import annotations

from pathlib import Path

import pytest

from genlab.config import ExperimentConfig
from genlab.config_reference import format_markdown, format_text, reference
from genlab.errors import ConfigError

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def _leaf_keys(raw: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in raw.items():
        if isinstance(value, dict) and value:
            keys |= _leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_key_of_the_resolved_config_is_in_the_reference_with_its_default():
    rows = {r.key: r for r in reference()}
    resolved = ExperimentConfig().to_dict()  # what a run's config.yaml holds
    leaves = _leaf_keys(resolved)
    missing = sorted(k for k in leaves if k not in rows)
    assert not missing
    assert rows["optim.lr"].default == "0.001" and rows["optim.lr"].allowed == "> 0, <= 10"
    assert rows["train.precision"].kind == "one of auto|fp32|bf16|fp16"
    assert rows["train.early_stopping"].is_section and rows["train.early_stopping"].default
    assert rows["guard.inject[].kind"].kind == "one of nan_loss|inf_grad|loss_spike|crash"


def test_every_key_outside_tune_says_what_it_means():
    # tune: is the tuner's schema (genlab.tuning.schema); its descriptions are its own.
    blank = [r.key for r in reference() if not r.meaning and not r.key.startswith("tune")]
    assert not blank, f"add a Field description to: {blank}"


def test_a_section_shows_alone_and_an_unknown_one_suggests_the_right_name():
    text = format_text(reference("model.vae"))
    assert text.splitlines()[0].startswith("[model.vae]")
    assert all(line.startswith("model.vae.") for line in text.splitlines()[1:])
    assert "model.vae.beta = 1.0" in text and "weight of the KL term" in text
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        reference("trian")


def test_docs_config_md_is_current():
    assert DOC.read_text(encoding="utf-8") == format_markdown(reference()), (
        "docs/CONFIG.md is stale: regenerate it with `genlab config --show --markdown > "
        "docs/CONFIG.md`"
    )
