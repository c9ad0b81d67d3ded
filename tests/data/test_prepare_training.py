"""Training on prepared datasets: JSONL sources, memmap windows, BPE, eval on the test split."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from prepkit import jsonl_overrides, make_docs, planted_corpus, write_jsonl
from rich.console import Console

from genlab.data import lm as lm_mod
from genlab.data import prepare as prepare_mod
from genlab.data.corpus import split_corpus
from genlab.data.lm import build_lm_data, windows
from genlab.data.prepare import CACHE_ENV
from genlab.training.loop import train
from testkit import read_metrics, run_cli, tiny_config

QUIET = Console(quiet=True)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    path, _ = planted_corpus(tmp_path / "c.jsonl", n=60)
    return path


def test_jsonl_source_trains_end_to_end_and_the_run_names_its_dataset(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config("train.max_steps=12", *jsonl_overrides(corpus)), run_dir, console=QUIET)
    assert read_metrics(run_dir)[-1]["step"] == 12
    record = json.loads((run_dir / "data.json").read_text())
    prepared = tmp_path / "cache" / record["cache_key"]
    assert record["dataset_dir"] == str(prepared.resolve())
    assert record["config"]["text_field"] == "body" and set(record["splits"]) == {"train", "val"}
    assert "split:" in (run_dir / "config.yaml").read_text()  # every default written out


def test_memmap_windows_equal_in_memory_windows_in_training(corpus, tmp_path, monkeypatch):
    cfg = tiny_config("train.max_steps=8", *jsonl_overrides(corpus))
    data = build_lm_data(cfg.data, cfg.seed)
    assert isinstance(data.train_tokens, np.memmap)
    in_ram = np.array(data.train_tokens, dtype=np.int64)
    starts = [0, 5, len(in_ram) - cfg.data.block_size - 1]
    for a, b in zip(windows(data.train_tokens, starts, 32), windows(in_ram, starts, 32)):
        assert a.dtype == torch.int64 and torch.equal(a, b)
    train(cfg, tmp_path / "memmap", console=QUIET)

    real = lm_mod.build_lm_data

    def in_memory(*args, **kwargs):
        d = real(*args, **kwargs)
        d.train_tokens = np.array(d.train_tokens, dtype=np.int64)
        d.val_tokens = np.array(d.val_tokens, dtype=np.int64)
        return d

    monkeypatch.setattr(lm_mod, "build_lm_data", in_memory)
    train(cfg, tmp_path / "ram", console=QUIET)
    keep = ("train/loss", "val/loss", "train/grad_norm")
    pick = [[r.get(k) for k in keep] for r in read_metrics(tmp_path / "memmap")]
    assert pick == [[r.get(k) for k in keep] for r in read_metrics(tmp_path / "ram")]


def test_bpe_trains_on_the_train_split_only_and_generate_works(
    corpus, tmp_path, monkeypatch, capsys
):
    seen: list[str] = []
    real = prepare_mod.BPETokenizer.train

    def spy(texts, **kwargs):
        texts = list(texts)
        seen.extend(texts)
        return real(texts, **kwargs)

    monkeypatch.setattr(prepare_mod.BPETokenizer, "train", staticmethod(spy))
    overrides = [*jsonl_overrides(corpus), "data.tokenizer=bpe", "data.vocab_size=300"]
    cfg = tiny_config("train.max_steps=6", *overrides)
    split = split_corpus(cfg.data, cfg.seed)
    run_dir = tmp_path / "bpe"
    train(cfg, run_dir, console=QUIET)
    assert seen == [d.text for d in split.train]  # no val/test text shaped the vocabulary
    assert json.loads((run_dir / "tokenizer.json").read_text())["kind"] == "bpe"
    capsys.readouterr()
    code = run_cli("generate", run_dir, "--prompt", "parser", "--max-new-tokens", "10")
    assert code == 0 and capsys.readouterr().out.startswith("parser")
    # A fresh process too: loading a bpe tokenizer must not depend on earlier imports.
    out = subprocess.run(
        [sys.executable, "-m", "genlab.cli", "generate", str(run_dir), "--max-new-tokens", "5"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_eval_on_the_test_split(corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = tiny_config("train.max_steps=6", *jsonl_overrides(corpus), "data.split.test=0.2")
    train(cfg, run_dir, console=QUIET)
    code = run_cli(
        "eval", run_dir, "--split", "test", "--metrics", "perplexity", "--num-samples", "2"
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "eval/test/perplexity" in metrics
    test_ids = {d.id for d in split_corpus(cfg.data, cfg.seed).test}
    trained_on = json.loads(
        (tmp_path / "cache" / json.loads((run_dir / "data.json").read_text())["cache_key"]
         / "split_ids.json").read_text()
    )  # fmt: skip
    assert test_ids == set(trained_on["test"]) and not test_ids & set(trained_on["train"])


def test_resume_reuses_the_prepared_dataset(tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in make_docs(30)])
    run_dir = tmp_path / "run"
    train(tiny_config("train.max_steps=10", f"data.source={src}"), run_dir, console=QUIET)
    datasets = sorted((tmp_path / "cache").iterdir())
    assert run_cli("resume", run_dir, "train.max_steps=14") == 0
    assert sorted((tmp_path / "cache").iterdir()) == datasets  # same tokenizer: no rebuild
