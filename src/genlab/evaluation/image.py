"""Image-generation metrics on feature vectors: FID, KID, precision/recall/density/coverage,
and an Inception-Score-style classifier score.

Every function takes features already extracted by a fixed network (see `features.py`):
float tensors or arrays of shape (N, D), one row per image. All arithmetic is float64: FID
subtracts large, nearly equal traces, and float32 loses the digits that matter.

References:
- FID: Heusel et al. 2017. KID: Bińkowski et al. 2018 (unbiased polynomial-kernel MMD).
- Precision/recall: Kynkäänniemi et al. 2019 (k-NN manifolds).
- Density/coverage: Naeem et al. 2020.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from genlab.errors import ConfigError, DataError
from genlab.evaluation.result import MetricResult

__all__ = [
    "KID_SCALE",
    "classifier_score",
    "feature_stats",
    "few_samples_caveat",
    "fid",
    "frechet_distance",
    "image_metric_results",
    "kid",
    "precision_recall_density_coverage",
]

FeatureArray = torch.Tensor | np.ndarray


def _as_features(x: FeatureArray, name: str, min_rows: int = 2) -> torch.Tensor:
    """(N, D) float64 CPU tensor, or a DataError naming what is wrong."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise DataError(
            f"{name} features must be a 2-D (N, D) array, got shape {tuple(t.shape)}; "
            f"flatten each image's features to one row"
        )
    if t.shape[0] < min_rows:
        raise DataError(
            f"{name} features need at least {min_rows} rows, got {t.shape[0]}; "
            f"evaluate on more images"
        )
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise DataError(
            f"{name} features contain NaN or inf ({int((~torch.isfinite(t)).sum())} entries); "
            f"check the generator's outputs and the feature extractor"
        )
    return t


def _check_same_dim(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape[1] != fake.shape[1]:
        raise DataError(
            f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}; "
            f"extract both with the same feature network"
        )


# --------------------------------------------------------------------------- FID


def feature_stats(feats: FeatureArray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    x = _as_features(feats, "input")
    mu = x.mean(dim=0)
    centred = x - mu  # (N, D)
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a covariance matrix. Eigenvalues that rounding pushed
    slightly below 0 are clipped: a covariance is positive semi-definite by construction."""
    evals, evecs = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians.

    Tr((S1 S2)^{1/2}) is computed as the sum of square roots of the eigenvalues of
    sqrt(S1) S2 sqrt(S1): that matrix is symmetric PSD and similar to S1 S2, so its
    eigenvalues are real and non-negative (up to rounding), unlike a general sqrtm of S1 S2,
    which can return complex parts or fail on singular covariances (N < D).
    """
    mu1, mu2 = mu1.double(), mu2.double()
    sigma1, sigma2 = sigma1.double(), sigma2.double()
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    evals = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = evals.clamp_min(0).sqrt().sum()
    dist = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    # A true distance is >= 0; a tiny negative is rounding on (near-)identical sets.
    return max(float(dist), 0.0)


def fid(real_feats: FeatureArray, fake_feats: FeatureArray) -> float:
    """Fréchet distance between the Gaussians fitted to real and fake (N, D) features.

    Warns (UserWarning) when a set has fewer samples than feature dimensions: its covariance
    is then singular and FID is strongly biased upward, so values are not comparable with
    FIDs computed on more samples."""
    real = _as_features(real_feats, "real")
    fake = _as_features(fake_feats, "fake")
    _check_same_dim(real, fake)
    dim = real.shape[1]
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < dim:
            warnings.warn(
                f"FID on {x.shape[0]} {name} samples with {dim}-dimensional features: the "
                f"covariance is singular and FID is biased; use at least {dim} samples",
                UserWarning,
                stacklevel=2,
            )
    mu1, sigma1 = feature_stats(real)
    mu2, sigma2 = feature_stats(fake)
    return frechet_distance(mu1, sigma1, mu2, sigma2)


# --------------------------------------------------------------------------- KID


def _poly_kernel(a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float, coef: float):
    return (a @ b.T * gamma + coef) ** degree  # (Na, Nb)


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef: float):
    """Unbiased MMD^2 with a polynomial kernel between two equal-size sets (m, D)."""
    m = x.shape[0]
    k_xx = _poly_kernel(x, x, degree, gamma, coef)
    k_yy = _poly_kernel(y, y, degree, gamma, coef)
    k_xy = _poly_kernel(x, y, degree, gamma, coef)
    # Dropping the diagonals k(x_i, x_i) is what makes the within-set terms unbiased.
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (
        m * (m - 1)
    )
    return within - 2 * k_xy.sum() / (m * m)


def kid(
    real: FeatureArray,
    fake: FeatureArray,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and (population) std of the unbiased MMD^2 with
    kernel k(x, y) = (gamma x.y + coef)^degree over `subsets` random subsets.

    subset_size defaults to min(N_real, N_fake, 1000); gamma defaults to 1/D. Same estimator
    as torchmetrics' KernelInceptionDistance, but seeded with its own generator so it is
    reproducible without touching the global RNG. Unlike FID it is unbiased, so it can be
    slightly negative for two samples of the same distribution.
    """
    x = _as_features(real, "real")
    y = _as_features(fake, "fake")
    _check_same_dim(x, y)
    if subset_size is None:
        subset_size = min(x.shape[0], y.shape[0], 1000)
    if subsets < 1 or subset_size < 2 or subset_size > min(x.shape[0], y.shape[0]):
        raise ConfigError(
            f"KID needs subsets >= 1 and 2 <= subset_size <= min(N_real, N_fake) = "
            f"{min(x.shape[0], y.shape[0])}, got subsets={subsets}, subset_size={subset_size}; "
            f"lower subset_size or evaluate on more images"
        )
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        xs = x[torch.randperm(x.shape[0], generator=gen)[:subset_size]]
        ys = y[torch.randperm(y.shape[0], generator=gen)[:subset_size]]
        scores.append(_unbiased_mmd2(xs, ys, degree, gamma, coef))
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


# --------------------------------------------------------------------------- P/R/D/C


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of x (N, D) to its k-th nearest other row: (N,)."""
    d = torch.cdist(x, x)  # (N, N); the diagonal (distance to itself, 0) is the 1st smallest
    return d.kthvalue(k + 1, dim=1).values


def precision_recall_density_coverage(
    real: FeatureArray, fake: FeatureArray, k: int = 5
) -> dict[str, float]:
    """k-NN manifold metrics between real and fake features.

    A point's neighbourhood is the ball reaching its k-th nearest neighbour in its own set.
    - precision: share of fake samples inside some real ball (fidelity).
    - recall: share of real samples inside some fake ball (diversity).
    - density: mean number of real balls containing a fake sample, divided by k (≈1 when the
      distributions match; rewards fakes in dense real regions, robust to real outliers).
    - coverage: share of real samples whose own ball contains at least one fake sample.
    Memory is O(N_real * N_fake) for the distance matrix.
    """
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}; the usual value is 5")
    x = _as_features(real, "real", min_rows=k + 1)
    y = _as_features(fake, "fake", min_rows=k + 1)
    _check_same_dim(x, y)
    real_radius = _kth_neighbour_radius(x, k)  # (Nr,)
    fake_radius = _kth_neighbour_radius(y, k)  # (Nf,)
    d = torch.cdist(x, y)  # (Nr, Nf)
    in_real_ball = d <= real_radius[:, None]  # (Nr, Nf): fake j inside real i's ball
    in_fake_ball = d <= fake_radius[None, :]  # (Nr, Nf): real i inside fake j's ball
    return {
        "precision": float(in_real_ball.any(dim=0).double().mean()),
        "recall": float(in_fake_ball.any(dim=1).double().mean()),
        "density": float(in_real_ball.double().sum() / (k * y.shape[0])),
        "coverage": float((d.min(dim=1).values <= real_radius).double().mean()),
    }


# --------------------------------------------------------------------------- classifier score


def classifier_score(probs: FeatureArray) -> float:
    """Inception-Score-style exp(E_x[KL(p(y|x) || p(y))]) from class probabilities (N, C).

    High when each sample is classified confidently (sharp p(y|x)) and the classes are used
    evenly (flat p(y)); ranges from 1 to C."""
    p = _as_features(probs, "probs", min_rows=1)
    if (p < 0).any() or not torch.allclose(
        p.sum(dim=1), torch.ones(p.shape[0], dtype=p.dtype), atol=1e-4
    ):
        raise DataError(
            f"probs rows must be non-negative and sum to 1, got row sums from "
            f"{float(p.sum(dim=1).min()):.4g} to {float(p.sum(dim=1).max()):.4g}; "
            f"apply softmax to the classifier's logits"
        )
    marginal = p.mean(dim=0, keepdim=True)  # (1, C): p(y)
    # xlogy gives 0 * log 0 = 0, so classes with zero probability contribute nothing.
    kl = (torch.xlogy(p, p) - torch.xlogy(p, marginal)).sum(dim=1)  # (N,)
    return math.exp(float(kl.mean()))


# --------------------------------------------------------------------------- reporting

# Below these counts an estimate is flagged in metrics.json and the eval table (not refused:
# a small folder still gets numbers, marked as rough). FID needs more samples than feature
# dimensions (else its covariance is singular and it is biased upward); KID's subsets of
# fewer than 100 give a high-variance estimate (torchmetrics and the KID paper use 1,000); the
# k-NN metrics and the classifier score are noisy on fewer than 100 images per set.
MIN_KID_SUBSET = 100
MIN_KNN_SAMPLES = 100

KID_SCALE = (
    "raw MMD^2 (not x1000), cubic polynomial kernel on the extractor's features; "
    "unbiased, so it can be slightly negative when the sets are alike"
)


def few_samples_caveat(metric: str, n_real: int, n_fake: int, dim: int, subset: int = 0) -> str:
    """Why an estimate from these sample counts is rough ('' when it is not)."""
    least = min(n_real, n_fake)
    if metric == "fid" and least < dim:
        return (
            f"few samples: {least} < {dim} feature dimensions, covariance singular, FID biased "
            f"upward; use >= {dim} images per set"
        )
    if metric == "kid" and subset < MIN_KID_SUBSET:
        return f"few samples: KID subsets of {subset} (< {MIN_KID_SUBSET}) are high-variance"
    if metric not in ("fid", "kid") and least < MIN_KNN_SAMPLES:
        return f"few samples: {least} images per set (< {MIN_KNN_SAMPLES}), a noisy estimate"
    return ""


def image_metric_results(
    real_feats: FeatureArray,
    fake_feats: FeatureArray,
    *,
    extractor_name: str,
    extractor_hash: str,
    fake_probs: FeatureArray | None = None,
    split: str | None = None,
    k: int = 5,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    seed: int = 0,
) -> dict[str, MetricResult]:
    """All feature-based image metrics as MetricResults for metrics.json. Each records the
    feature extractor's name and content hash: FIDs are only comparable with the same one.
    n is the number of fake samples; details hold the real count too."""
    real = _as_features(real_feats, "real")
    fake = _as_features(fake_feats, "fake")
    base: dict[str, Any] = {
        "extractor": extractor_name,
        "extractor_sha256": extractor_hash,
        "n_real": real.shape[0],
        "n_fake": fake.shape[0],
        "feature_dim": real.shape[1],
    }
    n, n_real, dim = fake.shape[0], real.shape[0], real.shape[1]

    def flagged(name: str, details: dict[str, Any], subset: int = 0) -> dict[str, Any]:
        caveat = few_samples_caveat(name, n_real, n, dim, subset)
        return {**details, "caveat": caveat} if caveat else details

    with warnings.catch_warnings():  # fid's few-samples warning: recorded as the caveat
        warnings.simplefilter("ignore", UserWarning)
        fid_value = fid(real, fake)
    results = {"fid": MetricResult("fid", fid_value, n, split, flagged("fid", dict(base)))}
    kid_mean, kid_std = kid(real, fake, kid_subsets, kid_subset_size, seed)
    size = kid_subset_size or min(n_real, n, 1000)
    kid_details = {
        **base, "scale": KID_SCALE, "std": kid_std, "subsets": kid_subsets, "subset_size": size,
        "seed": seed,
    }  # fmt: skip
    results["kid"] = MetricResult("kid", kid_mean, n, split, flagged("kid", kid_details, size))
    for name, value in precision_recall_density_coverage(real, fake, k).items():
        results[name] = MetricResult(name, value, n, split, flagged(name, {**base, "k": k}))
    if fake_probs is not None:
        score = classifier_score(fake_probs)
        details = flagged("classifier_score", dict(base))
        results["classifier_score"] = MetricResult("classifier_score", score, n, split, details)
    return results
