"""End-to-end training on the built-in corpus with a tiny model."""

import json

import yaml

from genlab.training.loop import train
from testkit import loss_keys, read_metrics, run_cli, tiny_config


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


def test_grad_accum_and_optimizers_train(tmp_path):
    for i, opt in enumerate(["adam", "sgd"]):
        run = train(
            tiny_config("train.max_steps=20", "train.grad_accum=2", f"optim.name={opt}"),
            tmp_path / str(i),
        )
        recs = read_metrics(run.run_dir)
        assert recs[-1]["train/loss"] < recs[0]["train/loss"]


def test_bf16_autocast_trains(tmp_path):
    run = train(tiny_config("train.max_steps=15", "train.precision=bf16"), tmp_path / "r")
    recs = read_metrics(run.run_dir)
    assert recs[-1]["train/loss"] < recs[0]["train/loss"]


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
    assert merged["evaluated_step"] == 10 and "val/bits_per_byte" in merged
    # A second train into the same directory needs --overwrite.
    assert run_cli(*args, run_dir) == 2
    assert run_cli(*args, run_dir, "--overwrite") == 0


def test_version(capsys):
    import pytest

    with pytest.raises(SystemExit) as info:
        run_cli("--version")
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("genlab 0.")
