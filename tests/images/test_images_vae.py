"""VAE: shapes for several image sizes, ELBO terms against hand computation, training."""

from __future__ import annotations

import math

import pytest
import torch

from genlab import config
from genlab.config import VAESection
from genlab.data.images import load_digits_images
from genlab.errors import ConfigError, DataError
from genlab.models.vae import (
    VAE,
    gaussian_kl_per_dim,
    kl_anneal_factor,
    reconstruction_nll,
    vae_loss,
)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_shapes(size, channels):
    torch.manual_seed(0)
    model = VAE((channels, size, size), VAESection(latent_dim=5, base_channels=8, hidden=32))
    x = torch.rand(3, channels, size, size)
    out = model(x, torch.Generator().manual_seed(0))
    assert out.x_out.shape == x.shape
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 5)
    assert model.reconstruct(x).shape == x.shape
    samples = model.sample(4, torch.Generator().manual_seed(1))
    assert samples.shape == (4, channels, size, size)
    assert samples.min() >= 0 and samples.max() <= 1  # bce: sigmoid of logits
    terms = model.loss(x)
    assert terms["kl_per_dim"].shape == (5,) and terms["loss"].ndim == 0
    terms["loss"].backward()


def test_conv_is_used_above_8_and_mlp_at_8():
    assert type(VAE((1, 8, 8), VAESection()).encoder).__name__ == "MLPEncoder"
    assert type(VAE((1, 28, 28), VAESection()).encoder).__name__ == "ConvEncoder"
    assert type(VAE((3, 8, 8), VAESection(arch="conv")).decoder).__name__ == "ConvDecoder"


def test_kl_matches_closed_form_by_hand():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # KL(N(m, s^2) || N(0, 1)) = 0.5 * (m^2 + s^2 - 1 - log s^2)
    expected = torch.tensor([[0.5 * (1 + 1 - 1 - 0), 0.5 * (0 + 4 - 1 - math.log(4.0))]])
    assert torch.allclose(gaussian_kl_per_dim(mu, logvar), expected)


def test_reconstruction_terms_by_hand():
    x = torch.tensor([1.0, 0.0, 0.5, 1.0]).view(1, 1, 2, 2)
    zeros = torch.zeros_like(x)
    # logits 0 -> p = 0.5 for every pixel: BCE = 4 * log 2 regardless of the targets
    assert torch.allclose(reconstruction_nll(x, zeros, "bce"), torch.tensor([4 * math.log(2)]))
    assert torch.allclose(reconstruction_nll(x, zeros, "mse"), torch.tensor([1 + 0 + 0.25 + 1]))
    lv = math.log(4.0)
    gauss = sum(0.5 * (math.log(2 * math.pi) + lv + v * v / 4) for v in (1.0, 0.0, 0.5, 1.0))
    assert torch.allclose(reconstruction_nll(x, zeros, "gaussian", lv), torch.tensor([gauss]))


def test_vae_loss_combines_terms_with_beta_and_free_bits():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    x_out = torch.zeros_like(x)
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, math.log(4.0)]])
    kl_dims = [0.5, 0.5 * (3 - math.log(4.0))]  # 0.5, ~0.8069
    terms = vae_loss(x, x_out, mu, logvar, recon="mse", beta=0.5)
    assert torch.allclose(terms["recon"], torch.tensor(1.0))  # each image: 1^2 + 0^2
    assert torch.allclose(terms["kl_per_dim"], torch.tensor(kl_dims))
    assert torch.allclose(terms["kl"], torch.tensor(sum(kl_dims)))
    assert torch.allclose(terms["loss"], torch.tensor(1.0 + 0.5 * sum(kl_dims)))
    assert torch.allclose(terms["elbo"], -torch.tensor(1.0 + sum(kl_dims)))
    # free bits 0.7: dim 0 (0.5 nats) is lifted to the floor, dim 1 (0.807) is untouched
    fb = vae_loss(x, x_out, mu, logvar, recon="mse", beta=1.0, free_bits=0.7)
    assert torch.allclose(fb["kl_term"], torch.tensor(0.7 + kl_dims[1]))
    assert torch.allclose(fb["kl"], terms["kl"])  # the reported KL is the true one
    # and below the floor the KL gives no gradient
    mu_p = mu.clone().requires_grad_(True)
    vae_loss(x, x_out, mu_p, logvar, recon="mse", free_bits=0.7)["loss"].backward()
    assert torch.all(mu_p.grad[:, 0] == 0)


def test_kl_annealing_schedules():
    assert kl_anneal_factor(0, "none", 100, 0.5) == 1.0
    assert [kl_anneal_factor(s, "linear", 100, 0.5) for s in (0, 50, 100, 500)] == [0, 0.5, 1, 1]
    cyc = [kl_anneal_factor(s, "cyclical", 100, 0.5) for s in (0, 25, 50, 99, 100, 125)]
    assert cyc == [0, 0.5, 1, 1, 0, 0.5]
    model = VAE((1, 8, 8), VAESection(kl_anneal="linear", anneal_steps=10, beta=2.0))
    x = torch.rand(4, 1, 8, 8)
    assert model.loss(x, step=0)["beta"] == 0.0
    assert model.loss(x, step=5)["beta"] == 1.0


def test_gaussian_logvar_is_learned_and_other_recons_keep_a_zero_buffer():
    learned = VAE((1, 8, 8), VAESection(recon="gaussian"))
    x = torch.rand(4, 1, 8, 8)
    learned.loss(x)["loss"].backward()
    assert learned.x_logvar.grad is not None and learned.x_logvar.grad != 0
    assert learned.pixel_logvar() == 0.0  # starts at sigma = 1
    plain = VAE((1, 8, 8), VAESection(recon="mse"))
    assert "x_logvar" not in dict(plain.named_parameters())
    assert "x_logvar" in plain.state_dict()  # every VAE saves the same keys


def test_user_errors():
    for override, key in (("recon=l1", "recon"), ("latent_dim=0", "latent_dim")):
        with pytest.raises(ConfigError, match=f"model.vae.{key}") as err:
            config.load(None, ["data.source=digits", "model.family=vae", f"model.vae.{override}"])
        assert "\n" not in str(err.value)
    # bce needs targets in [0, 1]: refused when the config loads, before any data is read
    for scaling in ("data.scale=standard", "data.scale_range=[-1, 1]"):
        with pytest.raises(ConfigError, match="recon 'bce' needs pixels in"):
            config.load(None, ["data.source=digits", "model.family=vae", scaling])
    config.load(None, ["data.source=digits", "model.family=vae", "data.scale_range=[0, 1]"])
    with pytest.raises(ConfigError, match="channels"):
        VAE((2, 8, 8), VAESection())
    x = torch.full((2, 1, 8, 8), -1.0)  # scaled to [-1, 1]: wrong for BCE
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        VAE((1, 8, 8), VAESection()).loss(x)


def test_training_on_digits_reduces_the_loss():
    torch.manual_seed(0)
    images = load_digits_images().images  # (1797, 1, 8, 8) in [0, 1]
    model = VAE((1, 8, 8), VAESection(latent_dim=8, hidden=128))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(200):
        idx = torch.randint(0, len(images), (64,), generator=g)
        terms = model.loss(images[idx], step, g)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.75 * first, (first, last)
    # reconstructions beat a blank image by a wide margin after training
    x = images[:200]
    err = (model.reconstruct(x) - x).pow(2).mean()
    assert err < 0.5 * x.pow(2).mean()
