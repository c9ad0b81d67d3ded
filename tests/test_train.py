"""End-to-end training on the built-in corpus with a tiny model."""

import json

import pytest
import torch
import yaml

from genlab.training import loop
from genlab.training.lm_task import LMFamily
from genlab.training.loop import train
from testkit import linear_output_dtypes, loss_keys, read_metrics, run_cli, tiny_config


def test_run_directory_contract_and_loss_goes_down(tmp_path):
    run_dir = tmp_path / "run"
    result = train(tiny_config("train.max_steps=60"), run_dir)
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, 61))
    for key in ("step", "time", "train/loss", "train/grad_norm", "train/lr"):
        assert all(key in r for r in records), key
    assert all("throughput/tokens_per_s" in r for r in records)
    val = [r["val/loss"] for r in records if "val/loss" in r]
    assert len(val) == 6  # eval_every=10
    # From ~ln(vocab) at the start to clearly lower after 60 steps.
    assert records[0]["train/loss"] > 4.0
    assert val[-1] < records[0]["train/loss"] - 1.0
    assert val[-1] < val[0]
    assert result.final_metrics["val/loss"] == val[-1]
    # time is seconds since the run started, increasing
    times = [r["time"] for r in records]
    assert times == sorted(times) and times[0] >= 0

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 60 and saved["optim"]["name"] == "adamw"
    assert (run_dir / "events.jsonl").read_text() == ""
    assert (run_dir / "plots" / "loss.png").stat().st_size > 1000
    assert (run_dir / "samples" / "step-60.txt").read_text()
    manifests = sorted((run_dir / "checkpoints").glob("step-*/manifest.json"))
    assert len(manifests) == 3  # keep_checkpoints default
    last = json.loads((run_dir / "checkpoints" / "step-60" / "manifest.json").read_text())
    assert last["step"] == 60 and set(last["files"]) >= {"model.safetensors", "state.pt"}
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["val/loss"] == val[-1]


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    a = train(tiny_config("train.max_steps=20"), tmp_path / "a")
    b = train(tiny_config("train.max_steps=20"), tmp_path / "b")
    c = train(tiny_config("train.max_steps=20", "seed=7"), tmp_path / "c")
    ka, kb, kc = (loss_keys(read_metrics(r.run_dir)) for r in (a, b, c))
    assert ka == kb
    assert ka != kc


@pytest.mark.parametrize(
    ("name", "cls", "state_keys"),
    [
        ("adam", torch.optim.Adam, {"exp_avg", "exp_avg_sq", "step"}),
        ("sgd", torch.optim.SGD, {"momentum_buffer"}),
        ("adamw", torch.optim.AdamW, {"exp_avg", "exp_avg_sq", "step"}),
    ],
)
def test_grad_accum_and_the_chosen_optimizer_are_used(tmp_path, monkeypatch, name, cls, state_keys):
    built, batches = [], []
    real_build, real_next = loop.build_optimizer, LMFamily.next_batch

    def spy_build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def spy_next(self):
        batches.append(real_next(self))
        return batches[-1]

    monkeypatch.setattr(loop, "build_optimizer", spy_build)
    monkeypatch.setattr(LMFamily, "next_batch", spy_next)
    cfg = tiny_config(
        "train.max_steps=20", "train.grad_accum=2", f"optim.name={name}", "optim.momentum=0.7"
    )
    run = train(cfg, tmp_path / "r")
    [opt] = built
    assert type(opt) is cls  # exactly the class asked for (AdamW subclasses Adam)
    groups = opt.param_groups
    if name == "sgd":
        assert all(g["momentum"] == 0.7 for g in groups)
    else:
        assert all(g["betas"] == (0.9, 0.95) for g in groups)
    states = list(opt.state.values())
    assert states and all(state_keys <= set(st) for st in states)
    # train.batch_size (8) is the step's batch, computed as two micro-batches of 4.
    assert len(batches) == 20 * 2 and {len(b.ids) for b in batches} == {4}
    recs = read_metrics(run.run_dir)
    assert recs[-1]["train/loss"] < recs[0]["train/loss"]


def test_bf16_autocast_is_used_in_the_forward(tmp_path):
    def trained_dtypes(precision: str) -> set[torch.dtype]:
        with linear_output_dtypes() as seen:
            cfg = tiny_config("train.max_steps=15", f"train.precision={precision}")
            run = train(cfg, tmp_path / precision)
        recs = read_metrics(run.run_dir)
        assert recs[-1]["train/loss"] < recs[0]["train/loss"]
        return seen

    assert trained_dtypes("bf16") == {torch.bfloat16}
    assert trained_dtypes("fp32") == {torch.float32}


def test_cli_train_then_generate(tmp_path, capsys, tiny_overrides):
    run_dir = tmp_path / "run"
    args = ["train", "examples/lm.yaml", *tiny_overrides, "train.max_steps=10", "--run-dir"]
    assert run_cli(*args, run_dir) == 0
    capsys.readouterr()
    code = run_cli("generate", run_dir, "--prompt", "The ", "--max-new-tokens", "30", "--seed", "1")
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("The ") and len(out.rstrip("\n")) == 34
    # Same seed, same text.
    run_cli("generate", run_dir, "--prompt", "The ", "--max-new-tokens", "30", "--seed", "1")
    assert capsys.readouterr().out == out
    # eval merges its metrics into metrics.json and prints a table.
    code = run_cli("eval", run_dir, "--metrics", "perplexity,bits_per_byte", "--num-samples", "4")
    assert code == 0
    assert "val/perplexity" in capsys.readouterr().out
    merged = json.loads((run_dir / "metrics.json").read_text())
    assert merged["evaluated_step"] == 10 and "eval/val/bits_per_byte" in merged
    # A second train into the same directory needs --overwrite.
    assert run_cli(*args, run_dir) == 2
    assert run_cli(*args, run_dir, "--overwrite") == 0


def test_version(capsys):
    import pytest

    with pytest.raises(SystemExit) as info:
        run_cli("--version")
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("genlab 0.")
