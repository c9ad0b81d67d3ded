"""Image metrics on feature vectors: FID against the closed form and torchmetrics, KID against
torchmetrics, k-NN precision/recall/density/coverage on clouds with known overlap."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from genlab.errors import ConfigError, DataError
from genlab.evaluation import (
    classifier_score,
    fid,
    image_metric_results,
    kid,
    precision_recall_density_coverage,
)


def _features_with_exact_stats(mu, sigma, n, seed):
    """(n, D) samples whose sample mean is exactly mu and unbiased sample covariance exactly
    sigma: whiten random draws, then colour them with the Cholesky factor of sigma."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mu)))
    z -= z.mean(axis=0)
    w = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = z @ np.linalg.inv(w).T  # sample covariance is now the identity
    return mu + z @ np.linalg.cholesky(sigma).T


def _random_cov(d, seed):
    a = np.random.default_rng(seed).standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def _closed_form(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_closed_form_on_non_commuting_covariances():
    d = 6
    s1, s2 = _random_cov(d, 1), _random_cov(d, 2)
    assert np.abs(s1 @ s2 - s2 @ s1).max() > 1.0  # the case a naive formula gets wrong
    mu1, mu2 = np.zeros(d), np.linspace(-1, 1, d)
    x1 = _features_with_exact_stats(mu1, s1, 200, seed=3)
    x2 = _features_with_exact_stats(mu2, s2, 300, seed=4)
    expected = _closed_form(mu1, s1, mu2, s2)
    assert fid(x1, x2) == pytest.approx(expected, rel=1e-9)
    assert fid(torch.from_numpy(x2).float(), x1) == pytest.approx(expected, rel=1e-5)  # symmetric


def test_fid_identical_is_zero_and_shift_adds_squared_distance():
    x = np.random.default_rng(0).standard_normal((100, 8))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)
    assert fid(x, x + 2.0) == pytest.approx(8 * 4.0, rel=1e-8)


class _PassThrough(torch.nn.Module):
    """Lets torchmetrics' metrics take precomputed features as their "images"."""

    def __init__(self, dim):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def test_fid_equals_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 16, generator=g, dtype=torch.float64)
    fake = (
        torch.randn(250, 16, generator=g, dtype=torch.float64)
        @ torch.randn(16, 16, generator=g, dtype=torch.float64)
        * 0.5
        + 0.3
    )
    metric = FrechetInceptionDistance(feature=_PassThrough(16))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert fid(real, fake) == pytest.approx(float(metric.compute()), rel=1e-6)


def test_fid_warns_when_fewer_samples_than_dims():
    x = np.random.default_rng(0).standard_normal((10, 20))
    with pytest.warns(UserWarning, match="singular"):
        value = fid(x, x + 1)
    assert math.isfinite(value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fid(np.random.default_rng(1).standard_normal((30, 20)), x.repeat(3, axis=0) + 0.5)


def test_fid_validation():
    with pytest.raises(DataError, match="dimension"):
        fid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(DataError, match="2-D"):
        fid(np.zeros(5), np.zeros(5))
    with pytest.raises(DataError, match="NaN"):
        fid(np.full((5, 2), np.nan), np.zeros((5, 2)))


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_equals_torchmetrics_on_full_sets():
    from torchmetrics.image.kid import KernelInceptionDistance

    g = torch.Generator().manual_seed(0)
    real = torch.randn(80, 12, generator=g, dtype=torch.float64)
    fake = torch.randn(80, 12, generator=g, dtype=torch.float64) * 1.3 + 0.2
    # subset_size = N: every subset is the whole set, so both estimates are deterministic.
    metric = KernelInceptionDistance(feature=_PassThrough(12), subsets=3, subset_size=80)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    tm_mean, _ = metric.compute()
    mean, std = kid(real, fake, subsets=3, subset_size=80)
    assert mean == pytest.approx(float(tm_mean), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_identical_near_zero_shifted_positive_and_seeded():
    x = np.random.default_rng(0).standard_normal((200, 10))
    mean0, _ = kid(x, x, subsets=10, subset_size=100, seed=1)
    mean1, std1 = kid(x, x + 1.0, subsets=10, subset_size=100, seed=1)
    # Unbiased: fluctuates around 0 for one distribution (subsets differ), clearly > 0 otherwise.
    assert abs(mean0) < 0.1 and mean1 > 5.0 and std1 > 0
    assert kid(x, x + 1.0, subsets=10, subset_size=100, seed=1) == (mean1, std1)
    assert kid(x, x + 1.0, subsets=10, subset_size=100, seed=2) != (mean1, std1)
    with pytest.raises(ConfigError, match="subset_size"):
        kid(x, x, subset_size=500)


def _cloud(n, scale, seed, d=2):
    return np.random.default_rng(seed).standard_normal((n, d)) * scale


def test_prdc_tight_inside_wide():
    wide, tight = _cloud(500, 3.0, 0), _cloud(500, 0.3, 1)
    m = precision_recall_density_coverage(real=wide, fake=tight, k=5)
    assert m["precision"] > 0.95 and m["recall"] < 0.3  # faithful but not diverse
    s = precision_recall_density_coverage(real=tight, fake=wide, k=5)
    assert s["precision"] < 0.3 and s["recall"] > 0.95  # diverse but mostly off-manifold
    # Coverage counts real points with a fake inside their ball: tight fakes only reach the
    # centre of the wide real cloud, and sparse wide fakes rarely land in the tiny real balls.
    assert m["coverage"] < 0.5 and s["coverage"] < 0.5
    assert m["density"] > 0.5 and s["density"] < 0.1  # fakes in dense real regions, or not


def test_prdc_identical_and_same_distribution():
    x = _cloud(400, 1.0, 0, d=4)
    m = precision_recall_density_coverage(x, x, k=5)
    assert m["precision"] == m["recall"] == m["coverage"] == 1.0
    # With fake == real each real ball holds its own centre plus its k neighbours.
    assert m["density"] == pytest.approx(6 / 5)
    same = precision_recall_density_coverage(x, _cloud(400, 1.0, 1, d=4), k=5)
    assert same["density"] == pytest.approx(1.0, abs=0.15)
    assert min(same["precision"], same["recall"], same["coverage"]) > 0.8
    with pytest.raises(DataError, match="at least 6 rows"):
        precision_recall_density_coverage(x[:5], x, k=5)


def test_classifier_score_bounds():
    c = 4
    confident_even = torch.eye(c).repeat(5, 1)  # sharp p(y|x), flat p(y)
    assert classifier_score(confident_even) == pytest.approx(c)
    assert classifier_score(torch.eye(c)[[0] * 10]) == pytest.approx(1.0)  # one class only
    assert classifier_score(torch.full((10, c), 1 / c)) == pytest.approx(1.0)  # no confidence
    with pytest.raises(DataError, match="softmax"):
        classifier_score(torch.ones(3, c))


def test_image_metric_results_record_extractor():
    real, fake = _cloud(60, 1.0, 0, d=3), _cloud(60, 1.2, 1, d=3)
    probs = torch.softmax(torch.randn(60, 5), dim=1)
    res = image_metric_results(
        real,
        fake,
        extractor_name="cnn",
        extractor_hash="ab" * 32,
        fake_probs=probs,
        split="test",
        kid_subsets=5,
    )
    assert set(res) == {
        "fid",
        "kid",
        "precision",
        "recall",
        "density",
        "coverage",
        "classifier_score",
    }
    for r in res.values():
        assert r.details["extractor_sha256"] == "ab" * 32 and r.n == 60 and r.split == "test"
    assert res["fid"].value == pytest.approx(fid(real, fake))
    assert res["kid"].details["subset_size"] == 60


def test_estimates_from_too_few_samples_are_flagged_not_warned_and_kid_states_its_scale():
    from rich.console import Console

    from genlab.evaluation.report import print_table

    def results(n: int, d: int = 16):
        real, fake = _cloud(n, 1.0, 0, d=d), _cloud(n, 1.2, 1, d=d)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no raw UserWarning reaches the user's console
            return image_metric_results(
                real, fake, extractor_name="cnn", extractor_hash="ab" * 32, kid_subsets=5
            )

    few, many = results(12), results(150)
    # FID on fewer samples than feature dimensions (12 < 16) has a singular covariance.
    assert "16 feature dimensions" in few["fid"].details["caveat"]
    assert "subsets of 12" in few["kid"].details["caveat"]
    assert "12 images per set" in few["coverage"].details["caveat"]
    assert all("caveat" not in r.details for r in many.values())
    assert few["kid"].details["scale"].startswith("raw MMD^2 (not x1000)")

    console = Console(width=300, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_table(few, console)
    text = console.export_text()
    kid_row = next(line for line in text.splitlines() if "kid" in line)
    assert "raw MMD² (not ×1000)" in kid_row and "⚠" in kid_row
    assert "12 generated vs 12 real" in kid_row
