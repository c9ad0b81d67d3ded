"""What `genlab compress` works on, per model family: the module to compress (with the source
run's weights, loaded through the normal run-loading path), calibration forwards from the
run's TRAIN split, and its quality measured by the functions `genlab eval` uses.

- gpt / hf: the language model (`genlab.evaluation.run.load_run_model`; a LoRA adapter is
  merged first, GPT-2 Conv1D layers become Linear). Quality: perplexity and bits per byte
  from `likelihood_metrics` (`score_lm` + `LikelihoodScore`) on the held-out val (and test)
  split; the gate watches val perplexity.
- vae: the whole VAE. Quality: the family's own validation ELBO (beta = 1, what training
  logs as val/elbo), reconstruction error and FID/KID (`genlab.evaluation.run_images`); the
  gate watches val ELBO.
- gan: the generator that samples (the EMA copy when the run kept one). Quality: FID/KID in
  genlab's digits feature space, as `genlab eval`; the gate watches val FID.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from genlab.compression.layers import convert_conv1d
from genlab.compression.prune import Calibrate
from genlab.config import ExperimentConfig
from genlab.registry import Registry
from genlab.training.checkpoint import CheckpointInfo

Quality = Callable[[nn.Module, bool], dict[str, float]]  # (model, full table?) -> metrics


@dataclass
class Subject:
    """The module compressed and everything needed around it (see the module doc)."""

    family: str
    cfg: ExperimentConfig
    root: Path  # the source run
    checkpoint: CheckpointInfo
    key: str  # the checkpoint file holding the compressed module ("model", "generator")
    model: nn.Module  # eval mode, on CPU
    calibrate: Calibrate
    quality: Quality
    main_metric: str  # the gate's metric key, e.g. "val/perplexity"
    higher_is_better: bool
    conv1d: list[str] = field(default_factory=list)  # GPT-2 Conv1D layers made Linear
    extra: dict[str, nn.Module] = field(default_factory=dict)  # saved as they are


def load_subject(run_root: Path, cfg: ExperimentConfig, checkpoint: CheckpointInfo) -> Subject:
    """The source run's module to compress, for its model family."""
    loader = SUBJECTS.lookup(cfg.model.family, where="model.family")
    return loader(run_root, cfg, checkpoint)


# --------------------------------------------------------------------------- language models


def lm_subject(run_root: Path, cfg: ExperimentConfig, checkpoint: CheckpointInfo) -> Subject:
    from genlab.data.corpus import split_corpus
    from genlab.data.lm import DOC_SEPARATOR, build_lm_data
    from genlab.evaluation.run import likelihood_metrics, load_run_model

    loaded = load_run_model(run_root, checkpoint.path, device="cpu")
    model = loaded.model.eval()
    if loaded.cfg.finetune.method == "lora":
        from genlab.finetune import merge_lora

        merge_lora(model)  # compress the fine-tuned model itself: base + adapter folded
    conv1d = convert_conv1d(model)
    data = build_lm_data(cfg.data, cfg.seed, tokenizer=loaded.tokenizer)
    splits = ["val", "test"] if cfg.data.split.test > 0 else ["val"]
    texts: dict[str, str] = {}

    def held_out(split: str) -> str:
        if not texts:  # the held-out documents, split once as training and `genlab eval` do
            corpus = split_corpus(cfg.data, cfg.seed)
            texts.update({s: DOC_SEPARATOR.join(d.text for d in corpus[s]) for s in splits})
        return texts[split]

    @torch.no_grad()
    def quality(m: nn.Module, full: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        run = replace(loaded, model=m.eval())
        for split in splits if full else ["val"]:
            results = likelihood_metrics(run, held_out(split), split, cfg.compress.eval_windows)
            for name in ("perplexity", "bits_per_byte"):
                out[f"{split}/{name}"] = results[name].value
            out[f"{split}/tokens"] = results["perplexity"].n
        return out

    return Subject(
        family=cfg.model.family,
        cfg=cfg,
        root=Path(run_root),
        checkpoint=checkpoint,
        key="model",
        model=model,
        calibrate=lm_calibration(data.train_tokens, cfg),
        quality=quality,
        main_metric="val/perplexity",
        higher_is_better=False,
        conv1d=conv1d,
    )


def lm_calibration(train_tokens, cfg: ExperimentConfig) -> Calibrate:
    """Forwards over `prune.calibration_batches` batches of evenly spaced train windows."""
    from genlab.data.lm import val_starts, windows

    block, bs = cfg.data.block_size, cfg.train.batch_size
    n = cfg.compress.prune.calibration_batches * bs
    x, _ = windows(train_tokens, val_starts(len(train_tokens), block, n), block)  # (N, T)

    @torch.no_grad()
    def calibrate(m: nn.Module) -> None:
        for i in range(0, len(x), bs):
            m(x[i : i + bs])

    return calibrate


# --------------------------------------------------------------------------- image models


def image_subject(run_root: Path, cfg: ExperimentConfig, checkpoint: CheckpointInfo) -> Subject:
    from genlab.evaluation.run_images import image_metrics
    from genlab.image_generation import load_image_run

    family = load_image_run(run_root, checkpoint.path).family
    vae = cfg.model.family == "vae"
    if vae:
        model, key, extra = family.model, "model", {}
    else:
        model = family.ema.module if family.ema is not None else family.gan.generator
        key, extra = "generator", {"discriminator": family.gan.discriminator}
    model.eval()
    splits = ["val", "test"] if cfg.data.split.test > 0 else ["val"]
    main = "val/elbo" if vae else "val/fid"

    def quality(m: nn.Module, full: bool) -> dict[str, float]:
        # No torch.no_grad() here: the feature classifier may train (once, then cached).
        out: dict[str, float] = {}
        with sampling_from(family, m):
            if vae:  # evaluate() is no-grad and leaves the model in train mode
                out.update({k: v for k, v in family.evaluate().items() if k == "val/elbo"})
                m.eval()
            names = ["fid", "kid"] + (["recon_mse"] if vae else [])
            if not full:
                names = [] if vae else ["fid"]
            for split in splits if full else ["val"]:
                if not names:
                    break
                results = image_metrics(
                    family, cfg, Path(run_root), split, names, cfg.compress.eval_samples
                )
                out.update({f"{split}/{k}": r.value for k, r in results.items()})
        return out

    return Subject(
        cfg.model.family,
        cfg,
        Path(run_root),
        checkpoint,
        key,
        model,
        image_calibration(family, cfg),
        quality,
        main,
        vae,
        extra=extra,
    )


@contextlib.contextmanager
def sampling_from(family, model: nn.Module) -> Iterator[None]:
    """Let an image family's evaluation use `model` (the VAE, or the GAN's sampling
    generator) for the duration."""
    if family.name == "vae":
        saved = family.model
        family.model = model
        try:
            yield
        finally:
            family.model = saved
        return
    saved_g, saved_ema = family.gan.generator, family.ema
    family.gan.generator, family.ema = model, None
    try:
        yield
    finally:
        family.gan.generator, family.ema = saved_g, saved_ema


def image_calibration(family, cfg: ExperimentConfig) -> Calibrate:
    """VAE: reconstructions of evenly spaced train images; GAN: the generator on seeded
    noise (its inputs are noise by definition)."""
    n = cfg.compress.prune.calibration_batches * cfg.train.batch_size
    if family.name == "vae":
        images = family.batches.train_images
        picks = torch.linspace(0, len(images) - 1, min(n, len(images))).long()
        x = family.batches.scaler.transform(images[picks])

        @torch.no_grad()
        def calibrate(m: nn.Module) -> None:
            m.reconstruct(x)

        return calibrate
    z = torch.randn(n, cfg.model.gan.z_dim, generator=torch.Generator().manual_seed(cfg.seed))

    @torch.no_grad()
    def calibrate_gan(m: nn.Module) -> None:
        m(z)

    return calibrate_gan


# model.family -> the loader of what compress works on
SUBJECTS = Registry(
    "model family to compress",
    {
        "gpt": "genlab.compression.subject:lm_subject",
        "hf": "genlab.compression.subject:lm_subject",
        "vae": "genlab.compression.subject:image_subject",
        "gan": "genlab.compression.subject:image_subject",
    },
)

__all__ = ["SUBJECTS", "Subject", "load_subject", "sampling_from"]
