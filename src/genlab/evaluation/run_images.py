"""`genlab eval` for image runs (VAE, GAN): FID, KID, precision/recall/density/coverage and a
classifier score of generated images against the held-out split, in the feature space of a
small classifier genlab trains on the run's own labelled training images (cached by content
hash; never downloaded), plus that classifier's accuracy and per-class report, and the VAE's
reconstruction error. Every feature-based number records the extractor's name and hash."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from genlab.config import ExperimentConfig
from genlab.errors import ConfigError, DataError
from genlab.evaluation.classify import classification_report
from genlab.evaluation.features import load_or_train_feature_classifier
from genlab.evaluation.image import image_metric_results
from genlab.evaluation.report import write_metrics_json
from genlab.evaluation.result import MetricResult, parse_metric_names
from genlab.image_generation import load_image_run, reconstruct_images, sample_images
from genlab.track.rundir import load_run_config, open_existing

FEATURE_CACHE = Path(".cache") / "genlab" / "features"
DEFAULT_FAKE = 1000  # generated images per evaluation (FID needs N well above 64 features)
# Computed from features of generated images (needs the feature classifier and samples).
SAMPLE_METRICS = (
    "fid", "kid", "precision", "recall", "density", "coverage", "classifier_score", "confidence",
)  # fmt: skip
KNOWN_METRICS = (*SAMPLE_METRICS, "extractor_accuracy", "recon_mse", "robustness")


def image_metric_names(metrics: str | Sequence[str] | None, family: str) -> list[str]:
    """The metric names to compute for a `family` run, validated before any work: None means
    every one but robustness (which perturbs the split several times)."""
    known = [m for m in KNOWN_METRICS if family == "vae" or m != "recon_mse"]
    default = [m for m in known if m != "robustness"]
    return parse_metric_names(metrics, known, default)


def evaluate_image_run(
    run_dir: str | Path,
    split: str = "val",
    metrics: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    checkpoint: str | Path | None = None,
    console: Console | None = None,
    write: bool = True,
) -> dict[str, MetricResult]:
    """Evaluate a VAE/GAN run on its held-out `split`; merge the results into metrics.json.
    Only the metrics asked for are computed (the feature classifier is trained, from its
    cache, only when a metric needs it)."""
    if split not in ("val", "test"):
        raise ConfigError(f"--split must be 'val' or 'test', got {split!r}; use --split val")
    if num_samples is not None and num_samples < 2:
        raise ConfigError(f"--num-samples must be >= 2, got {num_samples}; use e.g. 1000")
    run = open_existing(Path(run_dir))
    names = image_metric_names(metrics, load_run_config(run).model.family)  # before any work
    loaded = load_image_run(run_dir, checkpoint)
    ordered = image_metrics(loaded.family, loaded.cfg, run.root, split, names, num_samples, console)
    if write:
        write_metrics_json(run.root, ordered, split, loaded.checkpoint)
    return ordered


def image_metrics(
    family: Any,
    cfg: ExperimentConfig,
    run_root: Path,
    split: str,
    names: Sequence[str],
    num_samples: int | None = None,
    console: Console | None = None,
) -> dict[str, MetricResult]:
    """The named metrics of `family`'s networks on its held-out `split` (see the module doc);
    what `genlab eval` and `genlab compress` both report."""
    batches = family.batches
    held = getattr(batches.split, split)
    if len(held) < 2:
        raise DataError(
            f"the {split} split of {str(run_root)!r} has {len(held)} images; set "
            f"data.split.{split} higher (e.g. 0.1) and train again"
        )
    real = batches.data.images[held]
    say = console.print if console is not None else (lambda *_: None)
    run = open_existing(Path(run_root))
    results: dict[str, MetricResult] = {}
    if set(names) - {"recon_mse"}:
        results.update(_feature_metrics(family, cfg, run, split, held, names, num_samples, say))
    if "recon_mse" in names:
        what = {"what": "per-pixel MSE of reconstructions in [0, 1]"}
        error = _reconstruction_error(family, real)
        results["recon_mse"] = MetricResult("recon_mse", error, len(real), split, what)
    return {k: results[k] for n in names for k in results if k == n or k.startswith(n + "/")}


def _feature_metrics(family, cfg, run, split, held, names, num_samples, say):
    """The metrics that need the feature classifier: sample statistics (FID, KID, P/R/D/C,
    classifier score, confidence), the extractor's own accuracy, and robustness."""
    batches = family.batches
    labels = batches.data.labels
    if labels is None:
        raise DataError(
            f"run {str(run.root)!r} trained on unlabelled images, and FID/KID here use a "
            "feature classifier trained on labelled ones; put the images in one sub-folder "
            "per class to evaluate this way, or ask only for --metrics recon_mse"
        )
    real, real_labels = batches.data.images[held], labels[held]
    clf = load_or_train_feature_classifier(
        batches.train_images,
        labels[batches.split.train],
        real,
        real_labels,
        cache_dir=FEATURE_CACHE,
        seed=cfg.seed,
    )
    results: dict[str, MetricResult] = {}
    if set(names) & set(SAMPLE_METRICS):
        n_fake = num_samples or DEFAULT_FAKE
        fake = sample_images(family, n_fake, seed=cfg.seed)  # (n, C, H, W) pixels in [0, 1]
        say(
            f"evaluating {run.root}: {n_fake} generated vs {len(real)} {split} images, "
            f"features from {clf.name} (accuracy {clf.test_accuracy:.3f})"
        )
        fake_probs = clf.probs(fake)  # (n, classes)
        results.update(
            image_metric_results(
                clf.features(real),
                clf.features(fake),
                extractor_name=clf.name,
                extractor_hash=clf.content_hash,
                fake_probs=fake_probs,
                split=split,
                seed=cfg.seed,
            )
        )
        results["confidence"] = MetricResult(
            "confidence",
            float(fake_probs.max(dim=1).values.mean()),
            n_fake,
            split,
            {
                "what": "mean top-class probability of generated images (real digits ~0.97)",
                "extractor": clf.name,
            },
        )
    if "extractor_accuracy" in names:
        predicted = clf.probs(real).argmax(dim=1)
        report = classification_report(real_labels.tolist(), predicted.tolist())
        results["extractor_accuracy"] = MetricResult(
            "extractor_accuracy",
            clf.test_accuracy,
            len(real),
            split,
            {
                "extractor": clf.name,
                "extractor_sha256": clf.content_hash,
                "macro_f1": report["macro"]["f1"],
                "confusion_matrix": report["confusion_matrix"],
            },
        )
    if "robustness" in names:
        results.update(_robustness(family, clf, real, real_labels, split, run.root))
    return results


# Image perturbations scale with the image (a shift of strength 1 is a quarter of its width):
# on 8x8 digits, strengths below 0.25 would move nothing.
ROBUSTNESS_STRENGTHS = (0.0, 0.25, 0.5, 1.0)


@torch.no_grad()
def _robustness(family, clf, real, labels, split: str, run_root: Path) -> dict[str, MetricResult]:
    """Gaussian noise, blur and shifts of the held-out images at increasing strength → the
    feature classifier's accuracy, and the VAE's reconstruction error or the GAN
    discriminator's mean score on them. One table row per (perturbation, strength), one line
    per perturbation in plots/robustness-<what>.png; values are changes from strength 0."""
    from genlab.evaluation.robustness import IMAGE_PERTURBATIONS, plot_robustness, robustness_table

    def accuracy(x: torch.Tensor) -> float:
        return float((clf.probs(x).argmax(dim=1) == labels).float().mean())

    probes = {"classifier_accuracy": accuracy}
    if family.name == "vae":
        probes["recon_mse"] = lambda x: _reconstruction_error(family, x.clamp(0, 1), real)
    else:
        d = family.gan.discriminator.eval()

        def d_score(x: torch.Tensor) -> float:
            return float(d(family.batches.scaler.transform(x.clamp(0, 1))).mean())

        probes["discriminator_score"] = d_score
    results: dict[str, MetricResult] = {}
    for what, fn in probes.items():
        table = robustness_table(fn, real, IMAGE_PERTURBATIONS, ROBUSTNESS_STRENGTHS, seed=0)
        plot = plot_robustness(table, run_root / "plots" / f"robustness-{what}.png", what)
        for row in table:
            if row["strength"] == 0:
                continue
            name = f"robustness/{what}/{row['perturbation']}@{row['strength']:g}"
            results[name] = MetricResult(
                name,
                row["delta"],
                len(real),
                split,
                {"metric": row["metric"], "what": f"change in {what}", "plot": plot.name},
            )
    return results


def _reconstruction_error(
    family, inputs: torch.Tensor, targets: torch.Tensor | None = None
) -> float:
    """Per-pixel MSE between the reconstruction of `inputs` and `targets` (default: the
    inputs themselves), all in [0, 1] pixels."""
    recon = reconstruct_images(family, inputs)
    target = inputs if targets is None else targets
    return float(((recon - target) ** 2).mean())
