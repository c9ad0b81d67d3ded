"""`evaluate_run` on a tiny trained LM run: likelihood metrics against an independent hand
computation, BLEU/chrF on continuations, robustness, the metrics.json merge, clean errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from genlab import config as config_mod
from genlab.data.corpus import split_corpus
from genlab.data.lm import DOC_SEPARATOR
from genlab.data.tokenizers import load_tokenizer
from genlab.errors import CheckpointError, ConfigError, DataError, RunDirError
from genlab.evaluation import run as eval_run
from genlab.evaluation.report import print_table
from genlab.evaluation.run import KNOWN_METRICS, evaluate_run
from genlab.models.gpt import build_gpt
from genlab.training import checkpoint as ckpt
from genlab.training.loop import train
from testkit import tiny_config


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matmuls on 2 contended cores run ~10x faster on one thread; restore afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    train(tiny_config("train.max_steps=20"), run_dir, console=Console(quiet=True))
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A private copy, for tests that write metrics.json or plots."""
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _hand_nll(run_dir: Path, step: int = 20, bf16: bool = False) -> tuple[float, int, str]:
    """Token NLL sum over every non-overlapping window of the val stream, computed without
    genlab.evaluation: the rebuilt split, the raw model (under bf16 autocast if `bf16`),
    log_softmax and gather."""
    cfg = config_mod.load(run_dir / "config.yaml")
    tok = load_tokenizer(run_dir)
    val = split_corpus(cfg.data, cfg.seed).val
    ids = torch.tensor(tok.encode(DOC_SEPARATOR.join(d.text for d in val)))
    model = build_gpt(cfg.model, tok.vocab_size, cfg.data.block_size)
    ckpt.load_checkpoint(run_dir / "checkpoints" / f"step-{step}", model)
    model.eval()
    bs, total, count = cfg.data.block_size, 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, bs):
            x, y = ids[s : s + bs], ids[s + 1 : s + bs + 1]
            x = x[: len(y)]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x[None])
            logp = torch.log_softmax(logits.double(), dim=-1)[0]  # (T, V)
            total -= float(logp.gather(1, y[:, None]).sum())
            count += len(y)
    return total, count, tok.decode(ids[1:].tolist())


def test_likelihood_metrics_match_hand_computation(trained):
    res = evaluate_run(trained, metrics="perplexity,nll,bits_per_byte", write=False)
    assert list(res) == ["perplexity", "nll", "bits_per_byte"]
    nll_sum, n_tokens, target_text = _hand_nll(trained)
    assert res["nll"].n == n_tokens == res["perplexity"].n
    assert res["nll"].value == pytest.approx(nll_sum / n_tokens, rel=1e-5)
    assert res["perplexity"].value == pytest.approx(math.exp(res["nll"].value), rel=1e-12)
    n_bytes = len(target_text.encode("utf-8"))
    assert n_bytes != n_tokens  # non-ASCII text, so bytes and chars really differ here
    assert res["bits_per_byte"].details["n_bytes"] == n_bytes
    assert res["bits_per_byte"].value == pytest.approx(nll_sum / (math.log(2) * n_bytes), rel=1e-5)
    assert all(r.split == "val" for r in res.values())


def test_a_bf16_run_is_scored_in_bf16_as_in_training(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config("train.max_steps=5", "train.precision=bf16"), run_dir)
    res = evaluate_run(run_dir, metrics="nll", write=False)["nll"]
    bf16_sum, n_tokens, _ = _hand_nll(run_dir, step=5, bf16=True)
    fp32_sum, _, _ = _hand_nll(run_dir, step=5)
    assert res.n == n_tokens
    assert res.value == pytest.approx(bf16_sum / n_tokens, rel=1e-6)
    assert abs(res.value - fp32_sum / n_tokens) > 10 * abs(res.value - bf16_sum / n_tokens)


def test_an_fp16_run_is_scored_in_fp32_on_a_cpu(run_copy):
    # fp16 trains on a GPU only; its run evaluated where there is none falls back to fp32.
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("precision: fp32", "precision: fp16"))
    assert "precision: fp16" in config.read_text()  # the run now says fp16
    res = evaluate_run(run_copy, metrics="nll", write=False)["nll"]
    nll_sum, n_tokens, _ = _hand_nll(run_copy)
    assert res.value == pytest.approx(nll_sum / n_tokens, rel=5e-7)  # fp16: ~4e-6 off


def test_num_samples_picks_evenly_spaced_windows_deterministically(trained):
    a = evaluate_run(trained, metrics=["nll"], num_samples=5, write=False)["nll"]
    b = evaluate_run(trained, metrics=["nll"], num_samples=5, write=False)["nll"]
    assert a == b
    assert a.n == 5 * 32 and a.details["windows"] == 5


def test_eval_windows_cover_every_target_once():
    tokens = np.arange(100)
    rows = eval_run.eval_windows(tokens, 32, None)
    targets = torch.cat([y[0] for _, y in rows]).tolist()
    assert targets == list(range(1, 100))
    assert all(torch.equal(x[0] + 1, y[0]) for x, y in rows)  # y is x shifted by one


def test_bleu_chrf_on_continuations(trained):
    res = evaluate_run(trained, metrics="bleu,chrf", num_samples=6, write=False)
    assert list(res) == ["bleu", "chrf"]
    for name in ("bleu", "chrf"):
        r = res[name]
        assert 0.0 <= r.value <= 100.0 and r.n == 6
        assert "version:" in r.details["signature"] and r.details["decoding"] == "greedy"
    assert "tok:13a" in res["bleu"].details["signature"]
    example = res["chrf"].details["example"]  # char tokenizer: as many chars as the reference
    assert len(example["output"]) == len(example["reference"]) == 100
    again = evaluate_run(trained, metrics="chrf", num_samples=6, write=False)["chrf"]
    assert again.value == res["chrf"].value
    sampled = evaluate_run(trained, metrics="chrf", num_samples=6, temperature=1.0, write=False)
    assert sampled["chrf"].details["decoding"].startswith("sampled (temperature=1.0")


def test_metric_subset_computes_only_those(trained, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("continuation metrics were not asked for")

    monkeypatch.setattr(eval_run, "continuation_metrics", boom)
    monkeypatch.setattr(eval_run, "robustness_metrics", boom)
    res = evaluate_run(trained, metrics=["nll"], num_samples=2, write=False)
    assert list(res) == ["nll"]


def test_metrics_json_keeps_training_keys_and_adds_eval_apart(run_copy):
    before = json.loads((run_copy / "metrics.json").read_text())
    assert {"step", "val/loss", "val/perplexity", "val/tokens", "val/bytes"} <= set(before)
    res = evaluate_run(run_copy, metrics="perplexity,bleu", num_samples=4)
    after = json.loads((run_copy / "metrics.json").read_text())
    # The training-time estimates stay exactly as they were; the full evaluation has its
    # own keys, so the two can never be mixed under one name.
    assert {k: after[k] for k in before} == before
    assert after["eval/val/perplexity"] == res["perplexity"].value
    assert after["eval/val/perplexity"] != before["val/perplexity"]
    assert after["details"]["eval/val/bleu"]["details"]["signature"].startswith("nrefs:1")
    assert after["details"]["eval/val/perplexity"]["n"] == 4 * 32
    assert after["details"]["eval/val/perplexity"]["details"]["n_bytes"] > 0
    assert after["evaluated_step"] == 20
    assert after["evaluated_checkpoint"] == str(Path("checkpoints") / "step-20")
    # A second evaluation merges: earlier results stay.
    evaluate_run(
        run_copy, metrics="nll", num_samples=4, checkpoint=run_copy / "checkpoints" / "step-10"
    )
    merged = json.loads((run_copy / "metrics.json").read_text())
    assert merged["eval/val/bleu"] == after["eval/val/bleu"] and "eval/val/nll" in merged
    assert {k: merged[k] for k in before} == before and merged["evaluated_step"] == 10
    assert [p.name for p in run_copy.iterdir() if p.name.endswith(".tmp")] == []


def test_checkpoint_argument_evaluates_that_step(trained):
    at10 = evaluate_run(
        trained, metrics="nll", checkpoint=trained / "checkpoints" / "step-10", write=False
    )["nll"]
    at20 = evaluate_run(trained, metrics="nll", write=False)["nll"]
    nll_sum, n, _ = _hand_nll(trained, step=10)
    assert at10.value == pytest.approx(nll_sum / n, rel=1e-5)
    assert at10.value > at20.value  # training helped


def test_corrupt_metrics_json_is_an_error_and_left_alone(run_copy):
    (run_copy / "metrics.json").write_text("{not json")
    with pytest.raises(RunDirError, match="not valid JSON"):
        evaluate_run(run_copy, metrics="nll", num_samples=1)
    assert (run_copy / "metrics.json").read_text() == "{not json"


def test_robustness_plot_and_char_noise_monotone(run_copy):
    res = evaluate_run(run_copy, metrics="robustness", num_samples=16)
    assert (run_copy / "plots" / "robustness.png").stat().st_size > 1000
    keys = [f"robustness/char_noise@{s:g}" for s in (0.05, 0.1, 0.2)]
    assert set(keys) <= set(res)
    deltas = [res[k].value for k in keys]
    assert 0 < deltas[0] < deltas[1] < deltas[2]
    assert res[keys[0]].details["nll"] == pytest.approx(
        res[keys[0]].details["clean_nll"] + deltas[0]
    )
    saved = json.loads((run_copy / "metrics.json").read_text())
    assert saved["eval/val/robustness/char_noise@0.2"] == deltas[2]


def test_print_table_lists_metrics(trained):
    res = evaluate_run(trained, metrics="nll,chrf", num_samples=3, write=False)
    console = Console(record=True, width=200)
    print_table(res, console)
    text = console.export_text()
    assert "val/nll" in text and "val/chrf" in text and "nrefs:1" in text


# --------------------------------------------------------------------------- errors


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_metric_lists_known_names(trained):
    with pytest.raises(ConfigError) as exc:
        evaluate_run(trained, metrics="perplexity,blue")
    msg = _one_line(exc)
    assert "'blue'" in msg and all(name in msg for name in KNOWN_METRICS)


def test_test_split_and_bad_split_are_clean_errors(trained):
    with pytest.raises(DataError, match="no test split") as exc:
        evaluate_run(trained, split="test")
    assert "--split val" in _one_line(exc)
    with pytest.raises(ConfigError, match="'train'"):
        evaluate_run(trained, split="train")


def test_bad_run_dirs_and_arguments(trained, tmp_path):
    with pytest.raises(RunDirError, match="not a genlab run directory"):
        evaluate_run(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(trained / "config.yaml", bare / "config.yaml")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        evaluate_run(bare)
    # A wrong --checkpoint names what the run does have, so the fix is one copy-paste away.
    with pytest.raises(CheckpointError, match=r"not a checkpoint directory.*step-20"):
        evaluate_run(trained, checkpoint=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--num-samples"):
        evaluate_run(trained, num_samples=0)
    with pytest.raises(ConfigError, match="temperature"):
        evaluate_run(trained, temperature=-1.0)


def test_public_names_are_exported_lazily():
    import genlab.evaluation as ev

    assert ev.evaluate_run is evaluate_run and ev.print_table is print_table
    assert callable(ev.load_run_model)
    with pytest.raises(AttributeError):
        ev.no_such_metric  # noqa: B018


def test_byte_tokenizer_bits_per_byte_is_nll_in_bits(tmp_path):
    run_dir = tmp_path / "bytes"
    cfg = tiny_config("train.max_steps=10", "data.tokenizer=byte")
    train(cfg, run_dir, console=Console(quiet=True))
    res = evaluate_run(run_dir, metrics="nll,bits_per_byte,chrf", num_samples=4, write=False)
    # One token per byte: bits per byte is the mean NLL converted from nats to bits.
    assert res["bits_per_byte"].details["n_bytes"] == res["nll"].n == 4 * 32
    assert res["bits_per_byte"].value == pytest.approx(res["nll"].value / math.log(2))
    assert 0.0 <= res["chrf"].value <= 100.0


def test_eval_shows_progress_bars_on_a_terminal_only(trained):
    """`genlab eval` scores every window and generates every continuation: on a terminal a
    bar per phase counts the batches to the end; elsewhere (logs, CI) nothing is drawn, and
    the numbers are the same either way."""
    import io
    import re

    shown, hidden = io.StringIO(), io.StringIO()
    ask = {"metrics": "perplexity,chrf,robustness", "num_samples": 12, "write": False}
    on_tty = evaluate_run(trained, console=Console(file=shown, force_terminal=True), **ask)
    in_log = evaluate_run(trained, console=Console(file=hidden, force_terminal=False), **ask)
    assert {k: r.value for k, r in on_tty.items()} == {k: r.value for k, r in in_log.items()}
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown.getvalue())
    bs = config_mod.load(trained / "config.yaml").train.batch_size
    windows, pairs = on_tty["perplexity"].details["windows"], on_tty["chrf"].n
    lik = re.findall(r"val likelihood\s.*?(\d+)/(\d+)", plain)
    gen = re.findall(r"continuations\s.*?(\d+)/(\d+)", plain)
    assert lik and lik[-1][0] == lik[-1][1]  # the last frame: every batch scored
    assert int(lik[-1][1]) in {math.ceil(windows / bs), math.ceil((windows - 1) / bs) + 1}
    assert gen and gen[-1] == (str(math.ceil(pairs / bs)),) * 2
    # Robustness scores the clean text, then each perturbation at each strength.
    texts = 1 + len(eval_run.TEXT_PERTURBATIONS) * len(eval_run.ROBUSTNESS_STRENGTHS)
    rob = re.findall(r"robustness\s.*?(\d+)/(\d+)", plain)
    assert rob and rob[-1] == (str(texts),) * 2
    assert "likelihood" not in hidden.getvalue()
