"""The Python API (`genlab.train`, ...) in a fresh interpreter, as a notebook uses it, and the
registries: every entry resolves in a fresh process, and they list what the schema allows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import get_args

import pytest

from genlab import api, config
from genlab.data.tokenizers import TOKENIZERS
from genlab.errors import CheckpointError
from genlab.track.sinks import SINKS
from genlab.training.build import CLASSIFIERS, FAMILIES, TASKS
from testkit import TINY


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENLAB_CACHE_DIR": str(cwd / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_readme_api_walkthrough_in_a_fresh_interpreter(tmp_path):
    tiny = [*TINY, "train.max_steps=10"]
    code = f"""
    import json, sys
    import genlab
    assert "torch" not in sys.modules  # importing genlab is light
    cfg = genlab.load_config(None, {tiny!r})
    result = genlab.train(cfg, "runs/api")
    again = genlab.resume("runs/api", ["train.max_steps=14"])
    scores = genlab.evaluate("runs/api", metrics="perplexity,bits_per_byte", num_samples=2)
    text = genlab.generate("runs/api", prompt="The ", max_new_tokens=5, seed=1)
    print(json.dumps({{
        "step": result.step, "resumed": again.step, "val_loss": result.final_metrics["val/loss"],
        "ppl": scores["perplexity"].value, "ppl_n": scores["perplexity"].n, "text": text,
    }}))
    """
    out = json.loads(run_python(code, tmp_path).stdout.strip().splitlines()[-1])
    assert out["step"] == 10 and out["resumed"] == 14
    assert out["ppl"] > 1 and out["ppl_n"] == 2 * 32  # two windows of block_size 32
    assert out["text"].startswith("The ") and len(out["text"]) > 4
    saved = json.loads((tmp_path / "runs/api/metrics.json").read_text())
    assert saved["eval/val/perplexity"] == out["ppl"] and saved["step"] == 14


def test_load_config_from_a_mapping_and_errors_are_the_clis():
    cfg = api.load_config({"optim": {"lr": 3e-4}}, ["train.max_steps=7"])
    assert cfg.optim.lr == 3e-4 and cfg.train.max_steps == 7
    with pytest.raises(config.ConfigError, match=r"optim\.lrr"):
        api.load_config({"optim": {"lrr": 1}})


def test_every_registry_entry_resolves_in_a_fresh_process(tmp_path):
    code = """
    from genlab.api import EVALUATORS, GENERATORS, TASK_EVALUATORS
    from genlab.data.tokenizers import TOKENIZERS
    from genlab.training.build import CLASSIFIERS, FAMILIES
    from genlab.track.sinks import SINKS
    registries = (TOKENIZERS, FAMILIES, EVALUATORS, GENERATORS, SINKS, CLASSIFIERS, TASK_EVALUATORS)
    for registry in registries:
        for name in registry:
            assert callable(registry[name]), (registry.what, name)
    print("ok")
    """
    assert run_python(code, tmp_path).stdout.strip() == "ok"


def test_registries_list_exactly_what_the_schema_allows():
    families = set(get_args(config.ModelConfig.model_fields["family"].annotation))
    assert set(FAMILIES) == set(api.EVALUATORS) == set(api.GENERATORS) == families
    # task classify: every family is a backbone, and every task has its families and its eval.
    tasks = set(get_args(config.ExperimentConfig.model_fields["task"].annotation))
    assert set(CLASSIFIERS) == families and set(TASKS) == tasks
    assert set(api.TASK_EVALUATORS) == tasks - {"generate"}
    # Data tokenizers the config can ask for, plus the pretrained HF kind fine-tuning saves.
    kinds = set(get_args(config.DataConfig.model_fields["tokenizer"].annotation))
    assert set(TOKENIZERS) == kinds | {"hf_pretrained"}
    # One tracking sink per tool the track: section can switch on (report is not a sink).
    assert set(SINKS) == set(config.TrackConfig.model_fields) - {"report"}


def test_an_unknown_tokenizer_kind_is_a_clear_checkpoint_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"kind": "sentencepiece"}')
    from genlab.data.tokenizers import load_tokenizer

    with pytest.raises(CheckpointError, match="unknown tokenizer kind 'sentencepiece'") as e:
        load_tokenizer(tmp_path)
    assert "known: byte, char, bpe, hf, hf_pretrained" in str(e.value)
