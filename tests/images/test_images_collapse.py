"""Detectors fire on purpose-built failures and stay quiet on healthy evidence."""

from __future__ import annotations

import json

import pytest
import torch

from genlab.config import VAESection
from genlab.data.images import load_digits_images
from genlab.errors import ConfigError
from genlab.models.vae import VAE, vae_loss
from genlab.training.collapse import (
    DOverpoweringDetector,
    ModeCollapseDetector,
    PosteriorCollapseDetector,
    active_units,
    feature_spread,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_images().images  # (1797, 1, 8, 8)


def test_feature_spread_by_hand():
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert feature_spread(pts, "pairwise") == pytest.approx(5.0)
    assert feature_spread(pts, "trace") == pytest.approx(4.5 + 8.0)  # var 4.5 and 8
    assert feature_spread(torch.ones(5, 3)) == 0.0


@pytest.mark.parametrize("method", ["pairwise", "trace"])
def test_mode_collapse_fires_on_identical_samples(digits, method):
    detector = ModeCollapseDetector(digits[:400], ratio_threshold=0.2, method=method)
    collapsed = digits[7:8].expand(64, -1, -1, -1)  # the generator emits one digit
    event = detector.check(collapsed, step=120)
    assert event is not None and event["kind"] == "mode_collapse" and event["step"] == 120
    assert event["detail"]["ratio"] == pytest.approx(0.0)
    json.dumps(event)  # goes to events.jsonl as is


@pytest.mark.parametrize("method", ["pairwise", "trace"])
def test_mode_collapse_quiet_on_samples_like_the_data(digits, method):
    detector = ModeCollapseDetector(digits[:400], method=method)
    assert detector.check(digits[400:528]) is None  # other real digits
    # a handful of modes, each with variation, is not collapse either
    few_classes = digits[load_digits_images().labels < 5][:128]
    assert detector.check(few_classes) is None


def test_mode_collapse_custom_extractor_and_patience(digits):
    # extractor: mean intensity per image (a 1-D feature)
    detector = ModeCollapseDetector(
        digits[:400], extractor=lambda x: x.mean(dim=(1, 2, 3)).unsqueeze(1), patience=2
    )
    collapsed = digits[:1].expand(32, -1, -1, -1)
    assert detector.check(collapsed) is None  # first low check: patience
    assert detector.check(collapsed) is not None
    assert detector.check(collapsed) is None  # streak restarts after an event
    detector.load_state_dict({"low_streak": 1})
    assert detector.check(collapsed) is not None


def test_d_overpowering_fires_after_a_full_window_only():
    det = DOverpoweringDetector(threshold=0.99, window=5)
    events = [det.update(1.0, 1.0, step=s) for s in range(5)]
    assert events[:4] == [None] * 4
    assert events[4]["kind"] == "d_overpowering" and events[4]["step"] == 4
    assert events[4]["detail"]["min_accuracy"] == 1.0
    # the window restarts: the next event needs 5 more pinned steps
    assert [det.update(1.0, 1.0) for _ in range(4)] == [None] * 4
    assert det.update(1.0, 1.0) is not None


def test_d_overpowering_quiet_when_healthy_or_interrupted():
    det = DOverpoweringDetector(threshold=0.99, window=5)
    assert all(det.update(0.8, 0.7) is None for _ in range(20))
    # pinned on real only (fake fooling D) is not overpowering
    assert all(det.update(1.0, 0.6) is None for _ in range(20))
    det = DOverpoweringDetector(threshold=0.99, window=5)
    accs = [1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 1.0]  # one miss inside the window
    assert all(det.update(a, torch.tensor(1.0)) is None for a in accs)
    # state survives a resume: one more pinned step completes the window
    resumed = DOverpoweringDetector(threshold=0.99, window=5)
    resumed.load_state_dict(json.loads(json.dumps(det.state_dict())))
    assert resumed.update(1.0, 1.0) is not None


def test_active_units_counts_varying_dims():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(200, 4, generator=g)
    mu[:, 2:] = 0.3 + 0.001 * mu[:, 2:]  # dims 2, 3 barely move with x
    count, variances = active_units(mu)
    assert count == 2 and variances.shape == (4,)


def test_posterior_collapse_fires_when_encoder_ignores_input():
    det = PosteriorCollapseDetector()
    mu = torch.zeros(128, 8)  # E_q[z|x] constant: the encoder ignores x
    logvar = torch.zeros(128, 8)  # and q(z|x) = the prior, so KL = 0
    x = torch.rand(128, 1, 2, 2)
    kl_per_dim = vae_loss(x, torch.zeros_like(x), mu, logvar, recon="bce")["kl_per_dim"]
    event = det.check(mu, kl_per_dim, step=50)
    assert event is not None and event["kind"] == "posterior_collapse"
    assert event["detail"]["active_units"] == 0 and event["detail"]["low_kl_dims"] == 8
    json.dumps(event)


def test_posterior_collapse_quiet_on_an_informative_encoder(digits):
    det = PosteriorCollapseDetector()
    torch.manual_seed(0)
    model = VAE((1, 8, 8), VAESection(latent_dim=6, hidden=64))
    x = digits[:256]
    mu, logvar = model.encode(x)
    mu = mu.detach() * 50  # an encoder whose means clearly follow the input
    kl_per_dim = vae_loss(x, torch.zeros_like(x), mu, logvar.detach(), recon="bce")["kl_per_dim"]
    assert det.check(mu, kl_per_dim) is None
    # half the dims collapsed is not "most of them"
    mu[:, :3] = 0.0
    kl_half = kl_per_dim.clone()
    kl_half[:3] = 0.0
    assert det.check(mu, kl_half) is None


def test_detector_settings_are_validated():
    with pytest.raises(ConfigError, match="ratio_threshold"):
        ModeCollapseDetector(torch.rand(4, 1, 2, 2), ratio_threshold=1.5)
    with pytest.raises(ConfigError, match="window"):
        DOverpoweringDetector(window=0)
    with pytest.raises(ConfigError, match="collapsed_fraction"):
        PosteriorCollapseDetector(collapsed_fraction=0.0)
