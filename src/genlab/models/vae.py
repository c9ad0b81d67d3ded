"""Variational autoencoder (Kingma & Welling 2014) for images.

    encoder:  x (B, C, H, W) -> [mu, logvar] (B, 2D)      q(z|x) = N(mu, diag(exp(logvar)))
    sample:   z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)           (reparameterisation)
    decoder:  z (B, D) -> x_out (B, C, H, W)                 logits (bce) or means (mse/gaussian)

Loss = the negative ELBO, per image (summed over pixels and latent dims), averaged over the batch:

    loss = recon + beta_t * sum_d max(KL_d, free_bits)

recon is one of
    bce       Bernoulli NLL with logits; targets must be in [0, 1]
    mse       sum of squared errors (a Gaussian NLL with sigma^2 = 1/2, constants dropped)
    gaussian  Gaussian NLL with a learned log-variance (one scalar, starting at 0)
beta_t = beta * kl_anneal_factor(step): linear warm-up or cyclical (Fu et al. 2019) annealing
fights posterior collapse early in training; free bits (Kingma et al. 2016) stop the
optimiser from pushing a latent dim's batch-average KL below a floor.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genlab.config import VAERecon as Recon
from genlab.config import VAESection
from genlab.errors import ConfigError, DataError
from genlab.models.image_nets import check_image_shape, make_decoder, make_encoder

LOGVAR_RANGE = (-9.0, 5.0)  # clamp for the learned pixel log-variance: sigma in [0.011, 12]


def kl_anneal_factor(step: int, schedule: str, steps: int, ratio: float) -> float:
    """Multiplier in [0, 1] on the KL term at `step`.

    linear: step / steps, then 1. cyclical: in each cycle of `steps`, ramp 0 -> 1 over the
    first `ratio` of it, then hold 1 (the ramp restarts every cycle).
    """
    if schedule == "none":
        return 1.0
    if schedule == "linear":
        return min(1.0, step / steps)
    if schedule == "cyclical":
        t = (step % steps) / steps  # position in the cycle, [0, 1)
        return min(1.0, t / ratio)
    raise ConfigError(f"kl_anneal must be 'none', 'linear' or 'cyclical', got {schedule!r}")


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per example and dim, (B, D), in closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reconstruction_nll(
    x: Tensor, x_out: Tensor, recon: Recon, x_logvar: Tensor | float | None = None
) -> Tensor:
    """-log p(x | z) per image, summed over pixels: (B,)."""
    if recon == "bce":
        nll = F.binary_cross_entropy_with_logits(x_out, x, reduction="none")
    elif recon == "mse":
        nll = (x_out - x).pow(2)
    elif recon == "gaussian":
        logvar = torch.as_tensor(0.0 if x_logvar is None else x_logvar, dtype=x.dtype)
        logvar = logvar.to(x.device)
        nll = 0.5 * (math.log(2 * math.pi) + logvar + (x - x_out).pow(2) * torch.exp(-logvar))
    else:
        raise ConfigError(f"recon must be 'bce', 'mse' or 'gaussian', got {recon!r}")
    return nll.flatten(1).sum(dim=1)


def vae_loss(
    x: Tensor,
    x_out: Tensor,
    mu: Tensor,
    logvar: Tensor,
    *,
    recon: Recon,
    beta: float = 1.0,
    free_bits: float = 0.0,
    x_logvar: Tensor | float | None = None,
) -> dict[str, Tensor]:
    """The negative ELBO and its parts. x, x_out: (B, C, H, W); mu, logvar: (B, D).

    Returns loss (what to minimise), recon (B-mean of summed NLL), kl (B-mean of summed KL,
    without the free-bits floor), kl_per_dim (D,), kl_term (the KL actually penalised),
    elbo (= -(recon + kl), in nats per image) and beta (the weight used).
    `beta` is the effective weight at this step (VAE.loss multiplies in the annealing).
    """
    if recon == "bce" and (x.min() < 0 or x.max() > 1):
        raise DataError(
            f"recon 'bce' needs targets in [0, 1], got values in [{x.min().item():.3g}, "
            f"{x.max().item():.3g}]; scale with minmax to [0, 1] or use recon: mse"
        )
    recon_per_image = reconstruction_nll(x, x_out, recon, x_logvar)  # (B,)
    kl_per_dim = gaussian_kl_per_dim(mu, logvar).mean(dim=0)  # (D,) batch-average
    kl = kl_per_dim.sum()
    # Free bits: a dim below the floor contributes a constant (zero gradient), so the
    # optimiser gains nothing by squeezing it further towards the prior.
    kl_term = kl_per_dim.clamp(min=free_bits).sum() if free_bits > 0 else kl
    rec = recon_per_image.mean()
    return {
        "loss": rec + beta * kl_term,
        "recon": rec,
        "kl": kl,
        "kl_per_dim": kl_per_dim,
        "kl_term": kl_term,
        "elbo": -(rec + kl),
        "beta": torch.tensor(float(beta)),
    }


class VAEOutput(NamedTuple):
    x_out: Tensor  # (B, C, H, W) decoder output: logits (bce) or means
    mu: Tensor  # (B, D)
    logvar: Tensor  # (B, D)
    z: Tensor  # (B, D) the reparameterised sample


class VAE(nn.Module):
    """A VAE for images of shape (C, H, W), built from the config's `model.vae` section."""

    NORM = "group"  # conv layers' normalization (exporters rebuild the decoder with it)

    def __init__(self, image_shape: tuple[int, int, int], config: VAESection):
        super().__init__()
        self.config = cfg = config
        self.image_shape = check_image_shape(image_shape)
        self.latent_dim = cfg.latent_dim
        common = {"arch": cfg.arch, "base_channels": cfg.base_channels, "hidden": cfg.hidden}
        self.encoder = make_encoder(image_shape, 2 * cfg.latent_dim, norm=self.NORM, **common)
        self.decoder = make_decoder(image_shape, cfg.latent_dim, norm=self.NORM, **common)
        # Pixel log-variance of the gaussian term, learned from 0 (sigma = 1); the other
        # reconstruction terms have none, and keep a zero buffer so every VAE saves the same
        # keys.
        init = torch.tensor(0.0)
        if cfg.recon == "gaussian":
            self.x_logvar = nn.Parameter(init)
        else:
            self.register_buffer("x_logvar", init)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> mu, logvar, each (B, D)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training

    def decode(self, z: Tensor) -> Tensor:
        """(B, D) -> (B, C, H, W) decoder output (logits for bce, means otherwise)."""
        return self.decoder(z)

    def output_mean(self, x_out: Tensor) -> Tensor:
        """Decoder output -> the mean image E[x | z] in the data's (scaled) range."""
        return torch.sigmoid(x_out) if self.config.recon == "bce" else x_out

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None, eps: Tensor | None = None
    ) -> VAEOutput:
        """`eps` (B, D): the reparameterization noise, when the caller draws it (data-parallel
        ranks take their rows of one global draw); else drawn here."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, D)
        return VAEOutput(self.decode(z), mu, logvar, z)

    def pixel_logvar(self) -> Tensor:
        """The gaussian term's log-variance, clamped so a learned one cannot run to -inf."""
        return self.x_logvar.clamp(*LOGVAR_RANGE)

    def loss(
        self,
        x: Tensor,
        step: int = 0,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One training step's loss terms (see `vae_loss`), with beta annealed at `step`."""
        cfg = self.config
        out = self(x, generator, eps)
        factor = kl_anneal_factor(step, cfg.kl_anneal, cfg.anneal_steps, cfg.anneal_ratio)
        return vae_loss(
            x,
            out.x_out,
            out.mu,
            out.logvar,
            recon=cfg.recon,
            beta=cfg.beta * factor,
            free_bits=cfg.free_bits,
            x_logvar=self.pixel_logvar(),
        )

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction (decode the posterior mean): (B, C, H, W)."""
        mu, _ = self.encode(x)
        return self.output_mean(self.decode(mu))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images from the prior: z ~ N(0, I) -> mean image, (n, C, H, W) in data range."""
        device = self.x_logvar.device  # always there (a parameter or a buffer)
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.output_mean(self.decode(z))
