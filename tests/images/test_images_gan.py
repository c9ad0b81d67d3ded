"""GAN: shapes, loss gradient signs, penalties on critics with known gradients, EMA."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from genlab import config
from genlab.config import GANSection
from genlab.errors import CheckpointError, ConfigError
from genlab.models.gan import (
    EMA,
    GAN,
    GAN_LOSSES,
    d_loss,
    d_loss_from_scores,
    g_loss,
    g_loss_from_scores,
    gradient_penalty,
    r1_penalty,
)


class LinearCritic(nn.Module):
    """D(x) = w . flatten(x) with a chosen weight: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return x.flatten(1) @ self.w


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_shapes(size, channels):
    torch.manual_seed(0)
    cfg = GANSection(z_dim=7, base_channels=8, hidden=32, spectral_norm=True)
    gan = GAN((channels, size, size), cfg)
    z = gan.sample_z(3, torch.Generator().manual_seed(0))
    fake = gan.generator(z)
    assert z.shape == (3, 7) and fake.shape == (3, channels, size, size)
    assert fake.abs().max() <= 1.0  # tanh output
    assert gan.discriminator(fake).shape == (3,)
    assert gan.sample(5, torch.Generator().manual_seed(1)).shape == (5, channels, size, size)


def test_spectral_norm_is_on_discriminator_only():
    gan = GAN((1, 16, 16), GANSection(spectral_norm=True))
    d_param_names = [n for n, _ in gan.discriminator.named_parameters()]
    assert any("parametrizations.weight" in n for n in d_param_names)
    assert not any("parametrizations" in n for n, _ in gan.generator.named_parameters())
    plain = GAN((1, 16, 16), GANSection(spectral_norm=False))
    assert not any("parametrizations" in n for n, _ in plain.discriminator.named_parameters())


@pytest.mark.parametrize("loss", GAN_LOSSES)
def test_loss_gradients_push_scores_the_right_way(loss):
    # scores at 0: inside the hinge margin, mid-slope for softplus
    real = torch.zeros(4, requires_grad=True)
    fake = torch.zeros(4, requires_grad=True)
    d_loss_from_scores(real, fake, loss).backward()
    # gradient descent moves against the gradient: D(real) up, D(fake) down
    assert torch.all(real.grad < 0) and torch.all(fake.grad > 0)
    fake_g = torch.zeros(4, requires_grad=True)
    g_loss_from_scores(fake_g, loss).backward()
    assert torch.all(fake_g.grad < 0)  # the generator wants D(fake) up


@pytest.mark.parametrize("loss", GAN_LOSSES)
def test_one_step_of_each_player_moves_d_as_intended(loss):
    torch.manual_seed(0)
    gan = GAN((1, 8, 8), GANSection(loss=loss, hidden=32))
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    fake = gan.generator(gan.sample_z(16))
    d_opt = torch.optim.SGD(gan.discriminator.parameters(), lr=0.05)
    # gp_weight=0: this checks the adversarial term's direction (the GP has its own tests)
    before = d_loss(gan.discriminator, real, fake, loss, gp_weight=0.0, r1_weight=0.0)
    d_opt.zero_grad()
    before["loss"].backward()
    d_opt.step()
    after = d_loss(gan.discriminator, real, fake, loss, gp_weight=0.0, r1_weight=0.0)
    # The shared output bias can move both means alike (nonsaturating: both go down);
    # what a D step must do is separate them.
    gap = lambda t: t["d_real"] - t["d_fake"]  # noqa: E731
    assert gap(after) > gap(before)

    g_opt = torch.optim.SGD(gan.generator.parameters(), lr=0.05)
    z = gan.sample_z(16, torch.Generator().manual_seed(1))
    g_before = g_loss(gan.discriminator, gan.generator(z), loss)
    g_opt.zero_grad()
    g_before["loss"].backward()
    g_opt.step()
    g_after = g_loss(gan.discriminator, gan.generator(z), loss)
    assert g_after["d_fake"] > g_before["d_fake"]


def test_gradient_penalty_zero_for_unit_norm_linear_critic():
    w = torch.randn(3 * 4 * 4)
    real, fake = torch.rand(8, 3, 4, 4), torch.rand(8, 3, 4, 4)
    unit = gradient_penalty(LinearCritic(w / w.norm()), real, fake)
    assert unit.abs() < 1e-10
    # ||w|| = 2: (2 - 1)^2 = 1 at every interpolate
    double = gradient_penalty(LinearCritic(2 * w / w.norm()), real, fake)
    assert torch.allclose(double, torch.tensor(1.0))
    # and the penalty is differentiable in D's weights (create_graph)
    critic = LinearCritic(2 * w / w.norm())
    gradient_penalty(critic, real, fake).backward()
    assert critic.w.grad is not None and critic.w.grad.norm() > 0


def test_r1_penalty_is_squared_gradient_norm():
    w = torch.randn(16)
    w = 3 * w / w.norm()
    assert torch.allclose(r1_penalty(LinearCritic(w), torch.rand(5, 1, 4, 4)), torch.tensor(9.0))
    real, fake = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    terms = d_loss(LinearCritic(w), real, fake, "hinge", gp_weight=0.0, r1_weight=2.0)
    assert torch.allclose(terms["r1"], torch.tensor(9.0))


def test_d_loss_monitors_accuracy():
    w = torch.ones(4) / 2  # D(x) = sum(x) / 2 for (B, 1, 2, 2) images
    real, fake = torch.ones(6, 1, 2, 2), -torch.ones(6, 1, 2, 2)
    terms = d_loss(LinearCritic(w), real, fake, "nonsaturating", gp_weight=0, r1_weight=0)
    assert terms["acc_real"] == 1.0 and terms["acc_fake"] == 1.0
    swapped = d_loss(LinearCritic(w), fake, real, "hinge", gp_weight=0, r1_weight=0)
    assert swapped["acc_real"] == 0.0 and swapped["acc_fake"] == 0.0
    # wgan critic scores have no fixed zero: threshold at the midpoint of the means
    shifted = d_loss(LinearCritic(w), real + 10, fake + 10, "wgan-gp", gp_weight=10, r1_weight=0)
    assert shifted["acc_real"] == 1.0 and shifted["acc_fake"] == 1.0
    assert shifted["gp"].abs() < 1e-10  # ||w|| = ||(1/2, 1/2, 1/2, 1/2)|| = 1: 1-Lipschitz
    assert set(terms) >= {"loss", "d_real", "d_fake", "acc_real", "acc_fake", "gp", "r1"}


def test_ema_averages_and_restores():
    src = nn.Linear(2, 2)
    ema = EMA(src, decay=0.75)
    start = [p.clone() for p in src.parameters()]
    with torch.no_grad():
        for p in src.parameters():
            p.add_(4.0)
    ema.update(src)
    for shadow, s0 in zip(ema.module.parameters(), start):
        assert torch.allclose(shadow, s0 + 1.0)  # 0.75 * s0 + 0.25 * (s0 + 4)
        assert not shadow.requires_grad
    state = ema.state_dict()
    other = EMA(nn.Linear(2, 2), decay=0.5)
    other.load_state_dict(state)
    assert other.decay == 0.75 and other.updates == 1
    assert torch.allclose(other.module.weight, start[0] + 1.0)
    with pytest.raises(CheckpointError, match="same model settings"):
        EMA(nn.Linear(3, 3)).load_state_dict(state)


def test_config_validation():
    for override in ("loss=lsgan", "d_steps_per_g=0", "ema_decay=1.0", "lr_d=0", "beta2=1.0"):
        with pytest.raises(ConfigError, match=f"model.gan.{override.split('=')[0]}") as err:
            config.load(None, ["data.source=digits", "model.family=gan", f"model.gan.{override}"])
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("loss", GAN_LOSSES)
def test_short_training_on_digits_moves_samples_towards_the_data(loss):
    """The recipe the loop follows: D step(s), G step, EMA update; sample from the EMA."""
    from genlab.data.images import load_digits_images
    from genlab.data.scale import MinMaxScaler

    torch.manual_seed(0)
    pixels = load_digits_images().images
    data = MinMaxScaler((-1, 1)).fit(pixels).transform(pixels)  # tanh range
    cfg = GANSection(loss=loss, z_dim=16, hidden=128, ema_decay=0.9)  # short run: short EMA memory
    gan = GAN((1, 8, 8), cfg)
    # DCGAN's Adam settings (lr 2e-4, betas (0.5, 0.999)), as the GAN family's optimizers get
    # them from model.gan.lr_d / lr_g / beta1 / beta2 (tested in test_image_training.py).
    betas = (cfg.beta1, cfg.beta2)
    d_opt = torch.optim.Adam(gan.discriminator.parameters(), 2e-4, betas=betas)
    g_opt = torch.optim.Adam(gan.generator.parameters(), 2e-4, betas=betas)
    ema = EMA(gan.generator, cfg.ema_decay)
    g = torch.Generator().manual_seed(0)

    def distance_to_nearest_real() -> float:
        """Mean distance from a sample to its nearest real digit (a precision-like measure)."""
        samples = gan.sample(256, g, ema).flatten(1)  # (256, 64)
        return torch.cdist(samples, data.flatten(1)).min(dim=1).values.mean().item()

    start = distance_to_nearest_real()
    for _ in range(200):
        for _ in range(cfg.d_steps_per_g):
            real = data[torch.randint(0, len(data), (64,), generator=g)]
            fake = gan.generator(gan.sample_z(64, g))
            d = d_loss(
                gan.discriminator,
                real,
                fake,
                loss,
                gp_weight=cfg.gp_weight,
                r1_weight=cfg.r1_weight,
                generator=g,
            )
            d_opt.zero_grad()
            d["loss"].backward()
            d_opt.step()
        gl = g_loss(gan.discriminator, gan.generator(gan.sample_z(64, g)), loss)
        g_opt.zero_grad()
        gl["loss"].backward()
        g_opt.step()
        ema.update(gan.generator)
        assert torch.isfinite(d["loss"]) and torch.isfinite(gl["loss"])
        assert 0.0 <= d["acc_real"] <= 1.0 and 0.0 <= d["acc_fake"] <= 1.0
    # GAN training oscillates, so only ask for a clear move towards the data (~0.6-0.8 seen)
    end = distance_to_nearest_real()
    assert end < 0.9 * start, (start, end)
