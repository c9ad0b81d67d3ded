"""The image families (VAE, GAN) for the training loop, and the image batches they share:
load (digits or a folder), split (seeded, stratified), scale (fitted on train only), augment
(train only), with sample ids so the guard can skip bad data."""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from genlab.config import ExperimentConfig
from genlab.data.augment import make_augmenter
from genlab.data.image_cache import prepared_images
from genlab.data.images import ImageData, SplitIndices
from genlab.data.sampler import IndexSampler
from genlab.data.scale import Scaler, make_scaler, scaler_from_state_dict
from genlab.models.gan import GAN, d_loss, discriminator_accuracy, g_loss
from genlab.models.vae import VAE
from genlab.track.console import make_console
from genlab.track.grids import save_image_grid, save_reconstruction_grid
from genlab.training.collapse import (
    DOverpoweringDetector,
    ModeCollapseDetector,
    PosteriorCollapseDetector,
)
from genlab.training.ema import EMA
from genlab.training.family import Finding, UpdateFn, UpdaterSpec
from genlab.training.goodput import phase

SCALER_FILE = "scaler.json"
SAMPLE_GRID = 64  # images in a sample grid


def describe_data(cfg: ExperimentConfig, data: ImageData, n_train: int, n_val: int) -> str:
    """One line for the console: what was loaded, the split, and the files skipped."""
    c, h, w = data.image_shape
    line = (
        f"data: {len(data):,} images {c}x{h}x{w} from {cfg.data.source} "
        f"({n_train:,} train / {n_val:,} val)"
    )
    skipped = data.counts.get("skipped", 0)
    if skipped:
        first = data.skipped_files[0] if data.skipped_files else "?"
        line += (
            f"; skipped {skipped} unreadable of {data.counts.get('found', skipped)} files "
            f"(first: {first})"
        )
    return line


@dataclass
class ImageBatch:
    x: torch.Tensor  # (B, C, H, W) scaled to the model's range
    ids: list[int]  # sample ids: indices into the train split


class ImageBatches:
    """Train batches (augmented, scaled) and the scaled validation images."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        device: torch.device,
        scaler_state: dict | None,
        console: Console | None = None,
        select: Callable[[SplitIndices, torch.Tensor | None], SplitIndices] | None = None,
    ):
        """`select(split, labels)` may narrow the seeded split (task classify: a
        cross-validation fold, a share of the labels) before anything is fitted on train."""
        self.cfg = cfg
        self.device = device
        console = console or make_console(stderr=True)
        self.data, split = prepared_images(cfg.data, cfg.seed, console)
        if select is not None:
            split = select(split, self.data.labels)
        self.split = split  # indices of train / val / test into self.data
        self.train_images = self.data.images[split.train]  # (N, C, H, W) pixels in [0, 1]
        self.val_images = self.data.images[split.val]
        # Skipped files are counted by the loader; say so where the user looks (the run's
        # console), not only in a return value nobody prints.
        console.print(
            describe_data(cfg, self.data, len(split.train), len(split.val)),
            highlight=False,
            markup=False,  # a path may contain [brackets]
            soft_wrap=True,  # one line, whatever the terminal width
        )
        scale_range = cfg.data.scale_range_for(cfg.model.family)
        self.scaler: Scaler = (
            scaler_from_state_dict(scaler_state)
            if scaler_state is not None
            else make_scaler(cfg.data.scale, scale_range).fit(self.train_images)
        )
        # Augmentation works on pixels in [0, 1], before scaling.
        self.augmenter = make_augmenter(cfg.data.augment, value_range=(0.0, 1.0))
        self.sampler = IndexSampler(len(self.train_images), cfg.seed)
        # This process's rows of a global batch (data parallel: the rank-strided slice).
        self.shard: Callable[[torch.Tensor], torch.Tensor] = lambda rows: rows
        self.drawn = 0  # batches drawn so far: seeds each batch's augmentation
        self.recent: deque[ImageBatch] = deque(maxlen=cfg.guard.skip_window * 2)
        self.val_scaled = self.scaler.transform(self.val_images).to(device)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.data.image_shape

    def next_batch(self) -> ImageBatch:
        """The next global batch's ids (whole: skip lists and the sampler state are the same on
        every rank) and this rank's images of it, augmented as the whole batch would be."""
        ids, _ = self.sampler.next_batch(self.cfg.train.batch_size)
        x = self.train_images[ids]
        if self.augmenter is not None:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.drawn)
            x = self.augmenter(x, g)
        self.drawn += 1
        batch = ImageBatch(self.scaler.transform(self.shard(x)).to(self.device), ids)
        self.recent.append(batch)
        return batch

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaler.inverse_transform(x.detach().cpu()).clamp(0.0, 1.0)

    def recent_ids(self) -> list[int]:
        return sorted({i for b in self.recent for i in b.ids})

    def skip(self, ids: list[int]) -> None:
        self.sampler.skipped.update(ids)
        self.recent.clear()

    def describe_recent(self) -> str:
        if not self.recent:
            return "no batch"
        ids = self.recent[-1].ids
        return f"train image ids {ids[:8]}{'...' if len(ids) > 8 else ''}"

    def save_scaler(self, run_root: Path) -> None:
        import json

        (run_root / SCALER_FILE).write_text(json.dumps(self.scaler.state_dict()), "utf-8")

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.drawn = int(state["drawn"])
        self.recent.clear()


class _ImageFamilyBase:
    """Data-side plumbing both image families share."""

    throughput_key = "throughput/samples_per_s"
    flops_per_unit = 0.0  # not counted (convolutions, heads): no throughput/mfu
    calibration_step = None  # train.precision auto keeps fp32 (precision.py)
    batches: ImageBatches

    def recent_ids(self) -> list[int]:
        return self.batches.recent_ids()

    def skip(self, ids: list[int]) -> None:
        self.batches.skip(ids)

    def skipped_ids(self) -> set[int]:
        return set(self.batches.sampler.skipped)

    def describe_recent(self) -> str:
        return self.batches.describe_recent()

    def parameter_counts(self) -> dict[str, int]:
        """The networks the optimizers train (the GAN's EMA generator is an average of the
        generator's weights, not more parameters: it is not counted, as frozen or otherwise)."""
        params = [p for u in self.updaters for p in u.module.parameters()]
        trainable = sum(p.numel() for p in params if p.requires_grad)
        return {"params/trainable": trainable, "params/total": sum(p.numel() for p in params)}

    def save_data_artifacts(self, run_root: Path) -> None:
        """scaler.json: the scaling fitted on train, reused by resume, eval and generate."""
        self.batches.save_scaler(run_root)

    def on_finish(self, run_root: Path) -> None:
        pass

    def _global_noise(self, *shape: int, uniform: bool = False) -> torch.Tensor:
        """Standard normal (or U(0, 1)) noise for the whole global batch (B, ...), this rank's
        rows of it: ranks draw alike (same seed and RNG state), so 2 ranks use exactly the
        noise one process would."""
        draw = torch.rand if uniform else torch.randn
        return self.batches.shard(draw(self.cfg.train.batch_size, *shape, device=self.device))


class _VAELoss(torch.nn.Module):
    """The VAE's training loss as a forward pass, so DDP sees (and syncs) it."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, step: int, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.vae.loss(x, step, eps=eps)


class VAEFamily(_ImageFamilyBase):
    name = "vae"

    def __init__(self, cfg: ExperimentConfig, batches: ImageBatches, device, autocast):
        v = cfg.model.vae  # the schema checked that bce gets pixels in [0, 1]
        self.cfg, self.batches, self.device, self.autocast = cfg, batches, device, autocast
        self.model = VAE(batches.image_shape, v).to(device)
        self.train_loss: torch.nn.Module = _VAELoss(self.model)  # DDP wraps it
        self.modules = {"model": self.model}
        self.updaters = [UpdaterSpec("model", self.model, cfg.optim.lr)]
        self.units_per_step = cfg.train.batch_size
        c = cfg.guard.collapse
        self.detector = PosteriorCollapseDetector(
            c.posterior_active, c.posterior_kl_floor, c.posterior_fraction
        )
        self._posterior: tuple[torch.Tensor, torch.Tensor] | None = None

    def train_step(self, step: int, update: UpdateFn) -> dict[str, float]:
        extra: dict[str, float] = {}

        def compute(hook):
            batch = self.batches.next_batch()
            eps = self._global_noise(self.model.latent_dim)  # (B/world, D)
            with self.autocast:
                terms = self.train_loss(batch.x, step, eps)
            loss = hook(terms["loss"])
            loss.backward()
            extra.update(
                {
                    "train/recon": terms["recon"].item(),
                    "train/kl": terms["kl"].item(),
                    "train/beta": float(terms["beta"]),
                }
            )
            return loss.detach()

        update("model", compute)
        return extra

    def after_update(self, name: str) -> None:
        pass

    def distribute(self, runtime: Any, wrap: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
        """Data parallel: this rank's rows of each global batch, its loss through DDP."""
        self.batches.shard = runtime.shard
        self.train_loss = wrap(self.train_loss)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Negative ELBO (beta = 1) per image on the validation split, and its terms."""
        from genlab.models.vae import vae_loss

        self.model.eval()
        x = self.batches.val_scaled
        mu, logvar = self.model.encode(x)
        out = vae_loss(
            x,
            self.model.decode(mu),
            mu,
            logvar,
            recon=self.model.config.recon,
            beta=1.0,
            x_logvar=self.model.pixel_logvar(),
        )
        self.model.train()
        self._posterior = (mu.cpu(), out["kl_per_dim"].cpu())
        return {
            "val/loss": out["loss"].item(),
            "val/elbo": out["elbo"].item(),
            "val/recon": out["recon"].item(),
            "val/kl": out["kl"].item(),
        }

    def findings(self, step: int, evaluated: bool) -> list[Finding]:
        if not evaluated or step < self.cfg.guard.collapse.check_after or self._posterior is None:
            return []
        event = self.detector.check(*self._posterior, step=step)
        return [Finding("model", event["kind"], event["detail"])] if event else []

    @torch.no_grad()
    def write_samples(self, step: int, out_dir: Path, seed: int) -> None:
        g = torch.Generator(device=self.device).manual_seed(seed)
        self.model.eval()
        samples = self.model.sample(SAMPLE_GRID, generator=g)
        originals = self.batches.val_scaled[:16]
        recon = self.model.reconstruct(originals)
        self.model.train()
        save_image_grid(self.batches.to_pixels(samples), out_dir / f"step-{step}.png")
        save_reconstruction_grid(
            self.batches.to_pixels(originals),
            self.batches.to_pixels(recon),
            out_dir / f"recon-step-{step}.png",
        )

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])


class GANFamily(_ImageFamilyBase):
    name = "gan"

    def __init__(self, cfg: ExperimentConfig, batches: ImageBatches, device, autocast):
        g = cfg.model.gan
        self.cfg, self.batches, self.device, self.autocast = cfg, batches, device, autocast
        self.gan = GAN(batches.image_shape, g).to(device)
        self.modules: dict[str, torch.nn.Module] = {
            "generator": self.gan.generator,
            "discriminator": self.gan.discriminator,
        }
        self.ema = EMA(self.gan.generator, g.ema_decay) if g.ema_decay > 0 else None
        if self.ema is not None:
            self.modules["generator_ema"] = self.ema.module
        betas = (g.beta1, g.beta2)
        lr = cfg.optim.lr
        self.updaters = [
            UpdaterSpec(
                "discriminator",
                self.gan.discriminator,
                g.lr_d or lr,
                "d_",
                betas,
                falling_loss=False,
            ),
            UpdaterSpec(
                "generator", self.gan.generator, g.lr_g or lr, "g_", betas, falling_loss=False
            ),
        ]
        self.units_per_step = cfg.train.batch_size * g.d_steps_per_g
        c = cfg.guard.collapse
        self.mode = ModeCollapseDetector(
            batches.val_scaled.cpu(), c.mode_ratio, patience=c.mode_patience
        )
        self.overpower = DOverpoweringDetector(c.d_accuracy, c.d_window)
        self._pending: list[Finding] = []
        # What training forwards go through (DDP wrappers under data parallel); evaluation and
        # samples use the plain networks.
        self.d_train: torch.nn.Module = self.gan.discriminator
        self.g_train: torch.nn.Module = self.gan.generator
        self.mean_over_ranks: Callable[[float], float] = lambda v: v

    def distribute(self, runtime: Any, wrap: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
        """Data parallel: this rank's rows of each global batch and of its noise; D and G each
        through DDP; D's accuracies (the overpowering detector's input) averaged over ranks so
        every rank finds the same events."""
        self.batches.shard = runtime.shard
        self.d_train = wrap(self.gan.discriminator)
        self.g_train = wrap(self.gan.generator)
        self.mean_over_ranks = runtime.all_reduce_mean

    def train_step(self, step: int, update: UpdateFn) -> dict[str, float]:
        g = self.cfg.model.gan
        monitors: dict[str, float] = {}
        for _ in range(g.d_steps_per_g):

            def compute_d(hook):
                real = self.batches.next_batch().x
                with torch.no_grad():
                    fake = self.gan.generator(self._global_noise(g.z_dim))
                # WGAN-GP's interpolation weights, also rows of one global draw.
                alpha = self._global_noise(1, 1, 1, uniform=True) if g.loss == "wgan-gp" else None
                out = d_loss(
                    self.d_train,
                    real,
                    fake,
                    g.loss,
                    gp_weight=g.gp_weight,
                    r1_weight=g.r1_weight,
                    gp_alpha=alpha,
                )
                loss = hook(out["loss"])
                loss.backward()
                monitors.update(
                    {
                        "train/d_acc_real": self.mean_over_ranks(float(out["acc_real"])),
                        "train/d_acc_fake": self.mean_over_ranks(float(out["acc_fake"])),
                    }
                )
                return loss.detach()

            update("discriminator", compute_d)
            event = self.overpower.update(
                monitors["train/d_acc_real"], monitors["train/d_acc_fake"], step
            )
            if event:
                # D is the side that is too strong: its guard answers (a cooldown slows D
                # down; a rollback restores both networks either way).
                self._pending.append(Finding("discriminator", event["kind"], event["detail"]))

        def compute_g(hook):
            fake = self.g_train(self._global_noise(g.z_dim))
            # Through D's DDP wrapper too: its hooks fire in this backward either way.
            loss = hook(g_loss(self.d_train, fake, g.loss)["loss"])
            loss.backward()
            return loss.detach()

        update("generator", compute_g)
        return monitors

    def after_update(self, name: str) -> None:
        if name == "generator" and self.ema is not None:
            # Warm the decay up, (1 + n) / (10 + n) capped at ema_decay (as TensorFlow's
            # ExponentialMovingAverage with num_updates): with a fixed 0.999 the average of a
            # run of a few hundred steps would still be mostly the random initial generator,
            # and its samples (and the mode-collapse check on them) would show noise.
            n = self.ema.updates
            self.ema.decay = min(self.cfg.model.gan.ema_decay, (1.0 + n) / (10.0 + n))
            self.ema.update(self.gan.generator)

    @torch.no_grad()
    def _samples(self, n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return self.gan.sample(n, gen, ema=self.ema)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Sample spread relative to the real validation images (1 = as varied as the data;
        near 0 = collapsed) and how well D tells real from fake on held-out images."""
        from genlab.training.collapse import feature_spread

        real = self.batches.val_scaled
        fake = self._samples(len(real), seed=self.cfg.seed)
        self._last_fake = fake.cpu()
        ratio = feature_spread(fake[:512].flatten(1)) / feature_spread(real[:512].flatten(1))
        d = self.gan.discriminator
        d.eval()
        acc_real, acc_fake = discriminator_accuracy(d(real), d(fake), self.cfg.model.gan.loss)
        d.train()
        return {
            "val/spread_ratio": ratio,
            "val/d_acc_real": float(acc_real),
            "val/d_acc_fake": float(acc_fake),
        }

    def findings(self, step: int, evaluated: bool) -> list[Finding]:
        found, self._pending = self._pending, []
        if evaluated and step >= self.cfg.guard.collapse.check_after:
            event = self.mode.check(self._last_fake, step)
            if event:
                found.append(Finding("generator", event["kind"], event["detail"]))
        return found

    def write_samples(self, step: int, out_dir: Path, seed: int) -> None:
        images = self.batches.to_pixels(self._samples(SAMPLE_GRID, seed))
        save_image_grid(images, out_dir / f"step-{step}.png")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "batches": self.batches.state_dict(),
            "mode": self.mode.state_dict(),
            "overpower": self.overpower.state_dict(),
        }
        if self.ema is not None:
            state["ema_updates"] = self.ema.updates
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state["batches"])
        self.mode.load_state_dict(state["mode"])
        self.overpower.load_state_dict(state["overpower"])
        if self.ema is not None:
            self.ema.updates = int(state.get("ema_updates", 0))
        self._pending = []


def build_image_family(
    cfg: ExperimentConfig,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    run_root: Path | None = None,
):
    """The VAE or GAN family; with `run_root`, the scaler fitted when that run started."""
    scaler_state = None
    if run_root is not None and (run_root / SCALER_FILE).is_file():
        scaler_state = json.loads((run_root / SCALER_FILE).read_text(encoding="utf-8"))
    with phase("data"):  # the run's goodput account: data preparation
        batches = ImageBatches(cfg, device, scaler_state)
    cls = VAEFamily if cfg.model.family == "vae" else GANFamily
    return cls(cfg, batches, device, autocast)
