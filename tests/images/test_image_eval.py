"""`genlab eval` on image runs: FID/KID/P/R/D/C and a classifier score in the feature space of
a locally trained digits classifier, merged into metrics.json; a clearly better generator
scores a better FID than a barely trained one."""

from __future__ import annotations

import json

from genlab import config
from genlab.cli import main
from genlab.training.loop import train

SMALL = [
    "data.source=digits",
    "model.vae.hidden=64",
    "model.gan.hidden=64",
    "train.batch_size=32",
    "train.eval_every=50",
    "train.checkpoint_every=50",
    "train.progress=false",
    "optim.weight_decay=0",
]


def test_eval_of_a_vae_run_writes_image_metrics(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the feature classifier caches under ./.cache
    short = tmp_path / "short"
    longer = tmp_path / "longer"
    train(config.load(None, [*SMALL, "model.family=vae", "train.max_steps=2"]), short)
    train(
        config.load(None, [*SMALL, "model.family=vae", "train.max_steps=300", "optim.lr=3e-3"]),
        longer,
    )
    assert main(["eval", str(short), "--num-samples", "300"]) == 0
    assert main(["eval", str(longer), "--num-samples", "300"]) == 0
    out = capsys.readouterr().out
    assert "val/fid" in out and "val/coverage" in out
    a = json.loads((short / "metrics.json").read_text())
    b = json.loads((longer / "metrics.json").read_text())
    for key in (
        "eval/val/fid",
        "eval/val/kid",
        "eval/val/precision",
        "eval/val/recall",
        "eval/val/density",
        "eval/val/coverage",
        "eval/val/classifier_score",
        "eval/val/recon_mse",
    ):
        assert key in b, key
    assert b["eval/val/fid"] < a["eval/val/fid"]  # trained longer → closer to the real digits
    assert b["eval/val/recon_mse"] < a["eval/val/recon_mse"]
    details = b["details"]["eval/val/fid"]
    assert details["details"]["extractor"].startswith("genlab-small-cnn")
    assert details["details"]["n_real"] == 180 and details["n"] == 300
    assert b["eval/val/extractor_accuracy"] > 0.9
    # The training loop's own numbers are kept beside the evaluation's, under their own keys.
    assert "val/elbo" in b and "val/fid" not in b


def test_eval_of_a_gan_run_and_a_metric_subset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "gan"
    train(config.load(None, [*SMALL, "model.family=gan", "train.max_steps=20"]), run)
    # A wrong name is refused before any work: no feature classifier is trained (its cache
    # stays absent), nothing is written.
    before = (run / "metrics.json").read_bytes()
    assert main(["eval", str(run), "--metrics", "fid,bleu"]) == 2
    assert "unknown metric name(s) 'bleu'" in capsys.readouterr().err
    assert not (tmp_path / ".cache" / "genlab" / "features").exists()
    assert (run / "metrics.json").read_bytes() == before
    assert main(["eval", str(run), "--metrics", "fid,coverage", "--num-samples", "200"]) == 0
    data = json.loads((run / "metrics.json").read_text())
    assert "eval/val/fid" in data and "eval/val/coverage" in data and "eval/val/kid" not in data


def test_image_robustness_degrades_with_strength(tmp_path, monkeypatch):
    from genlab.evaluation.run_images import evaluate_image_run

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "vae"
    train(config.load(None, [*SMALL, "model.family=vae", "train.max_steps=100"]), run)
    res = evaluate_image_run(run, metrics=["robustness"], num_samples=100)
    acc = {k.rsplit("/", 1)[1]: v.value for k, v in res.items() if "classifier_accuracy" in k}
    # The strongest noise and shift hurt the classifier more than the mildest ones.
    assert acc["gaussian_noise@1"] < acc["gaussian_noise@0.25"] <= 0.01
    assert acc["shift@1"] < acc["shift@0.5"] <= 0.01
    assert any(k.startswith("robustness/recon_mse/") for k in res)
    assert (run / "plots" / "robustness-classifier_accuracy.png").stat().st_size > 1000
    assert "fid" not in res  # only what was asked for
