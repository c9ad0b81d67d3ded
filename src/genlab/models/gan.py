"""DCGAN-style GAN (Radford et al. 2016) for images, with the losses and monitors a guard needs.

    generator:      z (B, z_dim) ~ N(0, I) -> decoder -> tanh -> (B, C, H, W) in [-1, 1]
    discriminator:  (B, C, H, W) -> encoder -> logit (B,)  (a "critic" score for wgan-gp)

Losses (d_* for the discriminator, g_* for the generator; r = D(real), f = D(fake)):
    nonsaturating  d = softplus(-r) + softplus(f)      g = softplus(-f)   (Goodfellow 2014)
    hinge          d = relu(1 - r) + relu(1 + f)       g = -f             (Miyato 2018)
    wgan-gp        d = f - r + gp_weight * GP          g = -f             (Gulrajani 2017)
GP = E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates x_hat of real and fake.
R1 (Mescheder 2018) = E[||grad_x D(real)||^2], added as r1_weight / 2 * R1 to any d loss.

Monitors returned with each loss: mean scores, and the discriminator's accuracy on real and
fake (real counted right when its score is above the threshold, fake when below). The
threshold is 0 for logit losses; a wgan critic's scores have no fixed zero, so there it is
the midpoint of the batch means — then accuracy measures how separable D finds the batches.

The networks are built from the config's `model.gan` section; the d:g step ratio, TTUR
learning rates (lr_d, lr_g), Adam betas (beta1, beta2) and the EMA decay in that section are
read by the GAN family (training/image_tasks.py), which hands them to the loop's optimizers;
the sampling generator is the EMA copy (`EMA`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genlab.config import GANLoss, GANSection
from genlab.errors import ConfigError
from genlab.models.image_nets import (
    check_image_shape,
    make_decoder,
    make_encoder,
    resolve_arch,
)
from genlab.training.ema import EMA

GAN_LOSSES: tuple[str, ...] = get_args(GANLoss)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's init: conv/linear weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, z_dim) -> images (B, C, H, W) in [-1, 1] (scale data with minmax to [-1, 1])."""

    # BatchNorm in G as in DCGAN; D never gets it (it would couple the examples that a
    # gradient penalty must treat one by one).
    NORM = "batch"

    def __init__(self, image_shape: tuple[int, int, int], config: GANSection):
        super().__init__()
        self.z_dim = config.z_dim
        self.config = config
        self.net = make_decoder(
            image_shape, config.z_dim, config.arch, config.base_channels, config.hidden, self.NORM
        )

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(self.net(z))


class Discriminator(nn.Module):
    """images (B, C, H, W) -> scores (B,) (logits, or critic values for wgan-gp)."""

    def __init__(self, image_shape: tuple[int, int, int], config: GANSection):
        super().__init__()
        self.net = make_encoder(
            image_shape,
            1,
            config.arch,
            config.base_channels,
            config.hidden,
            norm="none",
            spectral_norm=config.spectral_norm,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


class GAN(nn.Module):
    """Holds the generator and the discriminator; the loop owns their two optimisers."""

    def __init__(self, image_shape: tuple[int, int, int], config: GANSection):
        super().__init__()
        self.config = cfg = config
        self.image_shape = check_image_shape(image_shape)
        self.generator = Generator(image_shape, cfg)
        self.discriminator = Discriminator(image_shape, cfg)
        # DCGAN's small init relies on BatchNorm to restore the scale; the norm-free MLP
        # (tiny images) keeps PyTorch's default init, or z would barely reach the output.
        if resolve_arch(cfg.arch, self.image_shape) == "conv":
            dcgan_init(self.generator)
            if not cfg.spectral_norm:  # spectral norm sets D's scale itself
                dcgan_init(self.discriminator)

    def sample_z(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        # A compressed generator may hold no float parameters (int8 layers): ask its tensors.
        tensors = [*self.generator.parameters(), *self.generator.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
        return torch.randn(n, self.config.z_dim, generator=generator, device=device)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, ema: EMA | None = None
    ) -> Tensor:
        """n images (n, C, H, W) in [-1, 1], from the EMA generator when one is given."""
        net = ema.module if ema is not None else self.generator
        was_training = net.training
        net.eval()  # BatchNorm uses running statistics for samples
        images = net(self.sample_z(n, generator))
        net.train(was_training)
        return images


# ----------------------------------------------------------------------------- losses


def discriminator_accuracy(real: Tensor, fake: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """(acc_real, acc_fake): fraction of real scored above / fake below the threshold."""
    if loss == "wgan-gp":
        threshold = 0.5 * (real.mean() + fake.mean())
    else:
        threshold = torch.zeros((), device=real.device)
    return (real > threshold).float().mean(), (fake < threshold).float().mean()


def d_loss_from_scores(real: Tensor, fake: Tensor, loss: GANLoss) -> Tensor:
    """The discriminator loss on scores D(real) (B,) and D(fake) (B,), without penalties."""
    if loss == "nonsaturating":
        # -log sigmoid(r) - log(1 - sigmoid(f)), written with softplus for stability
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if loss == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if loss == "wgan-gp":
        return fake.mean() - real.mean()
    raise ConfigError(f"GAN loss must be one of {', '.join(GAN_LOSSES)}, got {loss!r}")


def g_loss_from_scores(fake: Tensor, loss: GANLoss) -> Tensor:
    """The generator loss on scores D(G(z)) (B,)."""
    if loss == "nonsaturating":
        return F.softplus(-fake).mean()  # -log sigmoid(f): strong gradient when D wins
    if loss in ("hinge", "wgan-gp"):
        return -fake.mean()
    raise ConfigError(f"GAN loss must be one of {', '.join(GAN_LOSSES)}, got {loss!r}")


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
    alpha: Tensor | None = None,
) -> Tensor:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2], x_hat = a*real + (1-a)*fake, a ~ U(0, 1)
    (`alpha` (B, 1, 1, 1) when the caller draws it: data-parallel ranks take rows of one draw)."""
    b = real.shape[0]
    if alpha is None:
        alpha = torch.rand(b, 1, 1, 1, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = discriminator(x_hat)  # (B,)
    # create_graph: the penalty itself is differentiated when D steps
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def r1_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """R1: E[||grad_x D(x)||^2] at real images (penalises D's slope on the data)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


def d_loss(
    discriminator: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    loss: GANLoss,
    *,
    gp_weight: float,
    r1_weight: float,
    generator: torch.Generator | None = None,
    gp_alpha: Tensor | None = None,
) -> dict[str, Tensor]:
    """One discriminator step's loss (fake is detached: G is not updated here) and monitors.

    Returns loss, d_real, d_fake (mean scores), acc_real, acc_fake, gp and r1 (0 when off).
    """
    real_scores = discriminator(real)  # (B,)
    fake_scores = discriminator(fake.detach())  # (B,)
    total = d_loss_from_scores(real_scores, fake_scores, loss)
    zero = torch.zeros((), device=real.device)
    gp = (
        gradient_penalty(discriminator, real, fake, generator, gp_alpha)
        if loss == "wgan-gp"
        else zero
    )
    r1 = r1_penalty(discriminator, real) if r1_weight > 0 else zero
    total = total + gp_weight * gp + 0.5 * r1_weight * r1
    acc_real, acc_fake = discriminator_accuracy(real_scores.detach(), fake_scores.detach(), loss)
    return {
        "loss": total,
        "d_real": real_scores.detach().mean(),
        "d_fake": fake_scores.detach().mean(),
        "acc_real": acc_real,
        "acc_fake": acc_fake,
        "gp": gp.detach(),
        "r1": r1.detach(),
    }


def g_loss(
    discriminator: Callable[[Tensor], Tensor], fake: Tensor, loss: GANLoss
) -> dict[str, Tensor]:
    """One generator step's loss (gradients flow through D into G) and D's mean fake score."""
    scores = discriminator(fake)  # (B,)
    return {"loss": g_loss_from_scores(scores, loss), "d_fake": scores.detach().mean()}


# ----------------------------------------------------------------------------- EMA
