"""Classify runs through the loop: frozen layers stay bit-identical to the pretrained ones,
the evaluation report lands in metrics.json, predict round-trips (its labels reproduce the
evaluation's accuracy, its files read back), and grid search with stratified k-fold CV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from clskit import TINY_CLASSIFY, write_labelled_csv
from safetensors.torch import load_file

from genlab import api
from testkit import TINY

COUNTS = {"math": 30, "files": 20, "net": 10}
STEPS = ["train.max_steps=6", "train.eval_every=3", "train.checkpoint_every=3"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    last = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))[-1]
    return load_file(str(last / "model.safetensors"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "topics.csv"
    write_labelled_csv(path, COUNTS)
    return path


@pytest.fixture(scope="module")
def base_gpt(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A 2-block genlab GPT (a language model of the same texts) to start classifiers from."""
    run = tmp_path_factory.mktemp("base") / "gpt"
    text = [f"data.source={data}", "data.dedup.near=false", "data.block_size=16"]
    api.train(None, run, [*TINY, *text, "model.n_layer=2", "train.max_steps=3"])
    return run


@pytest.fixture
def no_run_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip each run's PNG plots (most of a tiny run's time) where a test is about the search."""
    import genlab.track.plots

    monkeypatch.setattr(genlab.track.plots, "plot_run", lambda *args, **kwargs: None)


def test_frozen_layers_stay_bit_identical(base_gpt, data, tmp_path):
    run = tmp_path / "freeze"
    api.train(
        None,
        run,
        [*TINY_CLASSIFY, f"data.source={data}", f"finetune.init_from={base_gpt}",
         "data.block_size=16", "finetune.method=freeze", "finetune.freeze_blocks=1",
         "optim.lr=1e-2", *STEPS],
    )  # fmt: skip
    before, after = _weights(base_gpt), _weights(run)
    frozen = [k for k in before if k.startswith(("wte.", "wpe.", "blocks.0."))]
    trained = [k for k in before if k.startswith(("blocks.1.", "ln_f."))]
    assert frozen and trained
    for key in frozen:  # embeddings and the bottom block: exactly the pretrained tensors
        assert torch.equal(after[f"backbone.{key}"], before[key]), key
    changed = [k for k in trained if not torch.equal(after[f"backbone.{k}"], before[k])]
    assert changed  # the top block learned (the freeze is not "everything")
    assert "lm_head.weight" not in {k.removeprefix("backbone.") for k in after}
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["params/trainable"] < first["params/total"]


def test_an_image_encoder_frozen_whole(tmp_path):
    digits = [
        "data.source=digits", "model.family=vae", "model.vae.arch=mlp", "model.vae.hidden=16",
        "model.vae.latent_dim=4", "train.batch_size=16", "train.progress=false",
        "schedule.warmup_steps=1", "guard.healthy_after=1",
    ]  # fmt: skip
    api.train(None, tmp_path / "vae", [*digits, *STEPS])
    run = tmp_path / "cls"
    api.train(
        None,
        run,
        [*digits, "task=classify", f"finetune.init_from={tmp_path / 'vae'}",
         "finetune.method=freeze", "classify.label_fraction=0.2", *STEPS],
    )  # fmt: skip
    vae, cls = _weights(tmp_path / "vae"), _weights(run)
    # MLP encoder net.1 / net.3 are the trunk (net.5 went); the classifier names them 1 / 3
    for layer in ("1", "3"):
        for part in ("weight", "bias"):
            assert torch.equal(cls[f"backbone.{layer}.{part}"], vae[f"encoder.net.{layer}.{part}"])
    assert not any(k.startswith("backbone.5") for k in cls)
    classes = json.loads((run / "classes.json").read_text())
    # 20% of each class's train images, at least one: the counts classes.json records
    assert classes["classes"] == [str(d) for d in range(10)]
    assert 10 <= sum(classes["train_counts"].values()) <= 0.2 * 1797


def test_eval_report_and_predict_round_trip(data, tmp_path):
    run = tmp_path / "run"
    api.train(None, run, [*TINY_CLASSIFY, f"data.source={data}", "classify.class_weights=balanced",
                          "optim.lr=1e-2", *STEPS])  # fmt: skip
    results = api.evaluate(run, split="test")
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["eval/test/accuracy"] == results["accuracy"].value
    matrix = saved["eval/test/confusion_matrix"]
    assert matrix["labels"] == ["files", "math", "net"]
    assert sum(map(sum, matrix["rows"])) == results["accuracy"].n == 12  # 20% of 60
    assert (run / "plots" / "confusion.png").stat().st_size > 0
    assert saved["eval/test/baseline/chance_accuracy"] == pytest.approx(1 / 3)
    weights = json.loads((run / "classes.json").read_text())["class_weights"]
    assert weights == pytest.approx([36 / (3 * 12), 36 / (3 * 18), 36 / (3 * 6)])

    # The test split's texts through `predict`, read from a file: its labels score the same
    # accuracy as the evaluation (two paths: the rebuilt split vs raw records).
    from genlab.data.corpus import split_corpus

    cfg = api.load_config(run / "config.yaml")
    test_docs = split_corpus(cfg.data, cfg.seed, labels_from_folders=True).test
    source = tmp_path / "new.jsonl"
    source.write_text("".join(json.dumps({"text": d.text, "id": d.id}) + "\n" for d in test_docs))
    rows = api.predict(run, source, tmp_path / "out.jsonl")
    hits = [r["label"] == d.label for r, d in zip(rows, test_docs)]
    assert sum(hits) / len(hits) == pytest.approx(results["accuracy"].value)
    for r in rows:
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["label"] == max(r["probs"], key=r["probs"].get)
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == rows
    api.predict(run, source, tmp_path / "out.csv")
    with (tmp_path / "out.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["label"] for t in table] == [r["label"] for r in rows]
    assert float(table[0]["p_net"]) == rows[0]["probs"]["net"]

    # --metrics robustness: the accuracy under typos at 0.2 equals what `predict` scores on
    # the same texts perturbed here (labels from the rebuilt split), as a change from clean.
    from genlab.evaluation.robustness import TEXT_PERTURBATIONS

    robust = api.evaluate(run, split="test", metrics="robustness")
    typos = robust["robustness/typos@0.2"]
    noisy = TEXT_PERTURBATIONS["typos"]([d.text for d in test_docs], 0.2, typos.details["seed"])
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in noisy))
    rows = api.predict(run, source)
    noisy_accuracy = sum(r["label"] == d.label for r, d in zip(rows, test_docs)) / len(rows)
    assert typos.details["accuracy"] == pytest.approx(noisy_accuracy)
    assert typos.value == pytest.approx(noisy_accuracy - results["accuracy"].value)
    assert (run / "plots" / "robustness.png").stat().st_size > 0


def test_grid_search_over_lr_and_freeze_depth_with_stratified_folds(
    base_gpt, data, tmp_path, no_run_plots
):
    import yaml

    config = tmp_path / "grid.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "grid",
                "finetune": {"init_from": str(base_gpt), "method": "freeze"},
                "tune": {
                    "method": "grid",
                    "metric": "val/f1_macro",
                    "direction": "maximize",
                    "cv": {"folds": 2, "kind": "stratified"},
                    "space": {
                        "optim.lr": {"type": "categorical", "choices": [1e-3, 1e-2]},
                        "finetune.freeze_blocks": {"type": "categorical", "choices": [0, 2]},
                    },
                },
            }
        )
    )
    overrides = [*TINY_CLASSIFY, f"data.source={data}", "data.block_size=16", "train.max_steps=2",
                 "train.eval_every=2", "train.checkpoint_every=2"]  # fmt: skip
    study = api.tune(config, overrides, tmp_path / "study")
    assert study.n_complete == 4 and study.metric == "val/f1_macro"
    trials = list(csv.DictReader((tmp_path / "study" / "trials.csv").open()))
    values = [float(t["value"]) for t in trials]
    assert study.best_value == max(values)  # maximize
    # every trial trained on both folds; a fold's run config names its fold
    runs = sorted((tmp_path / "study" / "trials").glob("*/*/config.yaml"))
    assert len(runs) == 8
    folds = {yaml.safe_load(p.read_text())["data"]["cv_fold"] for p in runs}
    assert folds == {0, 1}


def test_the_guard_and_early_stopping_work_for_a_classifier(data, tmp_path):
    run = tmp_path / "guarded"
    result = api.train(
        None,
        run,
        [*TINY_CLASSIFY, f"data.source={data}", "train.max_steps=12", "train.eval_every=2",
         "guard.inject=[{step: 3, kind: nan_loss}]",
         "train.early_stopping={metric: val/f1_macro, mode: max, patience: 2}"],
    )  # fmt: skip
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["kind"], e["action"]) for e in events] == [(3, "nonfinite_loss", "skip")]
    assert all(torch.isfinite(t).all() for t in _weights(run).values())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r["val/f1_macro"] for r in records if "val/f1_macro" in r]
    # stopped early or ran out: either way the final weights are the best evaluation's
    assert result.final_metrics["val/f1_macro"] == pytest.approx(max(evaluated))


@pytest.mark.multiproc
def test_a_classifier_trains_data_parallel_like_one_process(tmp_path):
    from testkit import genlab_process, read_metrics

    cfg = [
        "train", "examples/classify-digits.yaml", "finetune.init_from=null",
        "finetune.method=full", "model.vae.arch=mlp", "model.vae.hidden=32",
        "train.max_steps=8", "train.batch_size=16", "train.eval_every=4",
        "train.checkpoint_every=4", "train.sample_every=8", "train.progress=false",
        "schedule.warmup_steps=2", "schedule.decay=constant",
    ]  # fmt: skip
    for name, extra, nproc in (("one", [], 1), ("ddp", ["train.strategy=ddp"], 2)):
        done = genlab_process(*cfg, *extra, "--run-dir", str(tmp_path / name), nproc=nproc)
        assert done.returncode == 0, done.stderr[-3000:]
    one, ddp = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "ddp")
    for key in ("train/loss", "val/loss", "val/f1_macro"):
        got = [r[key] for r in ddp if key in r]
        assert got and got == pytest.approx([r[key] for r in one if key in r], rel=1e-4), key
