"""Sampling images from a VAE or GAN run (`genlab generate` on an image run).

The samples come from the run's checkpoint (the GAN's EMA generator when it kept one, the
VAE's prior), drawn with a seeded generator so `--seed` gives the same grid every time. A VAE
run also gets its reconstructions of held-out images, originals above reconstructions.
`genlab eval` draws its generated images through `sample_images` too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from genlab.errors import ConfigError, RunDirError
from genlab.fileio import require_writable, unwritable

MAX_SAMPLES = 10_000  # a bound so a typo cannot start drawing a million images
RECONSTRUCTIONS = 16  # held-out images reconstructed next to a VAE's samples


@dataclass(frozen=True)
class GeneratedImages:
    """What `generate` on an image run wrote: the samples grid and, for a VAE, the grid of
    held-out images above their reconstructions."""

    grid: Path
    count: int
    seed: int
    step: int
    reconstructions: Path | None = None

    def __str__(self) -> str:
        lines = [f"{self.count} samples (seed {self.seed}, step {self.step}): {self.grid}"]
        if self.reconstructions is not None:
            lines.append(f"held-out images above their reconstructions: {self.reconstructions}")
        return "\n".join(lines)


class LoadedImageRun(NamedTuple):
    """A VAE/GAN run with its family built (data, scaler, networks on the CPU) and the
    weights of `checkpoint` loaded."""

    run: Any  # genlab.track.rundir.RunDir
    cfg: Any  # genlab.config.ExperimentConfig
    family: Any
    checkpoint: Any  # genlab.training.checkpoint.CheckpointInfo


def load_image_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> LoadedImageRun:
    """A VAE/GAN run, its weights loaded from `checkpoint` (default: the last) on the CPU;
    what `genlab generate`, `genlab eval` and `genlab compress` load an image run with."""
    from genlab.evaluation.run import pick_checkpoint
    from genlab.track.rundir import load_run_config, open_existing
    from genlab.training import checkpoint as ckpt
    from genlab.training.build import build_family

    run = open_existing(Path(run_dir))
    cfg = load_run_config(run)
    info = pick_checkpoint(run, checkpoint)
    family = build_family(cfg, torch.device("cpu"), contextlib.nullcontext(), run.root)
    ckpt.load_checkpoint(info.path, family.modules)
    return LoadedImageRun(run, cfg, family, info)


@torch.no_grad()
def sample_images(family: Any, n: int, seed: int) -> torch.Tensor:
    """n generated images (n, C, H, W), pixels in [0, 1]: the VAE's prior samples or the GAN
    generator's (its EMA copy when the run kept one)."""
    g = torch.Generator().manual_seed(seed)
    if family.name == "vae":
        family.model.eval()
        x = family.model.sample(n, generator=g)
    else:
        x = family.gan.sample(n, g, ema=family.ema)
    return family.batches.to_pixels(x)


@torch.no_grad()
def reconstruct_images(family: Any, images: torch.Tensor) -> torch.Tensor:
    """The VAE's reconstructions of `images` (pixels in [0, 1]), as pixels in [0, 1]."""
    model = family.model.eval()
    scaled = family.batches.scaler.transform(images)
    return family.batches.to_pixels(model.reconstruct(scaled))


def generate_images(
    run_dir: str | Path,
    *,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    num_samples: int = 64,
    out: str | Path | None = None,
) -> GeneratedImages:
    """Draw `num_samples` images from the run and write them as one PNG grid at `out`
    (default RUN_DIR/samples/generated-step-<N>-seed-<S>.png); for a VAE, also its
    reconstructions of held-out images beside it (`<out>-recon.png`)."""
    from genlab.track.grids import save_image_grid, save_reconstruction_grid

    if not 1 <= num_samples <= MAX_SAMPLES:
        raise ConfigError(
            f"--num-samples must be in [1, {MAX_SAMPLES:,}], got {num_samples}; use e.g. 64"
        )
    if not 0 <= seed < 2**63:
        raise ConfigError(f"--seed must be in [0, 2**63), got {seed}; use e.g. 0")
    target = None if out is None else Path(out)
    if target is not None and (target.suffix.lower() != ".png" or target.is_dir()):
        raise ConfigError(
            f"--out must be the path of a .png file, got {str(out)[:80]!r}; use e.g. "
            "--out samples.png"
        )
    if target is not None:
        require_writable(target.parent, "--out")  # before the model is loaded
    elif (why := unwritable(Path(run_dir) / "samples")) is not None:
        raise RunDirError(f"{why}; the grid goes to RUN_DIR/samples: pass --out with a .png path")
    run, _, family, info = load_image_run(run_dir, checkpoint)
    if target is None:
        target = run.samples / f"generated-step-{info.step}-seed-{seed}.png"
    grid = save_image_grid(sample_images(family, num_samples, seed), target)
    recon_path = None
    if family.name == "vae":
        held = family.batches.val_images[:RECONSTRUCTIONS]  # the same images every time
        recon_path = target.with_name(f"{target.stem}-recon.png")
        save_reconstruction_grid(held, reconstruct_images(family, held), recon_path)
    return GeneratedImages(grid, num_samples, seed, info.step, recon_path)
