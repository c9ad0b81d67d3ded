"""Detectors for the failure modes of image generative models, for the stability guard.

Each detector is a small class: configured once, then `check(...)` / `update(...)` is called
with a batch of evidence and returns None (healthy) or an event dict
    {"kind": "mode_collapse" | "d_overpowering" | "posterior_collapse", "step": int | None,
     "detail": {...numbers that explain the decision...}}
The guard decides the action and writes the event (adding "action") to events.jsonl, so
every value in "detail" is a plain float/int/list (JSON-able). Detectors with a window keep
it in `state_dict()` so a resumed run decides exactly as an uninterrupted one would.

  mode collapse       the generator's samples are far less spread out (in a feature space)
                      than the real data: spread(fake) / spread(real) < ratio_threshold
  D overpowering      the discriminator classifies real and fake (almost) perfectly for a
                      whole window of steps: the generator's gradients vanish
  posterior collapse  the VAE's encoder ignores its input: few active units
                      (Var_x(E_q[z|x]) > 0.01, Burda et al. 2016) and KL ~ 0 in most dims
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from genlab.errors import ConfigError

Event = dict[str, Any]
Spread = Literal["pairwise", "trace"]


def _event(kind: str, step: int | None, detail: dict[str, Any]) -> Event:
    return {"kind": kind, "step": step, "detail": detail}


# ----------------------------------------------------------------------------- mode collapse


def feature_spread(features: Tensor, method: Spread = "pairwise") -> float:
    """How spread out a set of feature vectors (N, F) is.

    pairwise: mean Euclidean distance over distinct pairs. trace: trace of the covariance
    (the total variance). Both are 0 when all vectors are identical.
    """
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"feature_spread needs (N >= 2, F) features, got {tuple(features.shape)}")
    f = features.double()
    if method == "pairwise":
        n = f.shape[0]
        dist = torch.cdist(f, f)  # (N, N), zero diagonal
        return float(dist.sum() / (n * (n - 1)))
    if method == "trace":
        return float(f.var(dim=0, correction=1).sum())
    raise ConfigError(f"spread method must be 'pairwise' or 'trace', got {method!r}")


class ModeCollapseDetector:
    """Compares the spread of generated samples with the real data's spread.

    `extractor` maps images (N, C, H, W) to features (N, F); default: flattened pixels.
    Fires after `patience` consecutive checks with ratio < ratio_threshold (one low check
    can be noise; early GAN outputs are also similar, so the guard may skip the first evals).
    """

    kind = "mode_collapse"

    def __init__(
        self,
        real: Tensor,
        ratio_threshold: float = 0.2,
        method: Spread = "pairwise",
        extractor: Callable[[Tensor], Tensor] | None = None,
        max_samples: int = 512,
        patience: int = 1,
    ):
        if not 0.0 < ratio_threshold < 1.0:
            raise ConfigError(
                f"mode_collapse ratio_threshold must be in (0, 1), got {ratio_threshold}"
            )
        if patience < 1:
            raise ConfigError(f"mode_collapse patience must be >= 1, got {patience}")
        self.ratio_threshold, self.method, self.patience = ratio_threshold, method, patience
        self.extractor = extractor or (lambda x: x.flatten(1))
        self.max_samples = max_samples
        self.real_spread = self._spread(real)
        if self.real_spread <= 0:
            raise ValueError("the real images are all identical; mode collapse is undefined")
        self.low_streak = 0

    @torch.no_grad()
    def _spread(self, images: Tensor) -> float:
        # Cap N: the pairwise method is O(N^2) and a few hundred samples estimate it well.
        return feature_spread(self.extractor(images[: self.max_samples]), self.method)

    def check(self, fake: Tensor, step: int | None = None) -> Event | None:
        """fake: generated images (N, C, H, W) in the same range as `real`, N >= 2."""
        fake_spread = self._spread(fake)
        ratio = fake_spread / self.real_spread
        self.low_streak = self.low_streak + 1 if ratio < self.ratio_threshold else 0
        if self.low_streak < self.patience:
            return None
        self.low_streak = 0
        return _event(
            self.kind,
            step,
            {
                "ratio": ratio,
                "threshold": self.ratio_threshold,
                "fake_spread": fake_spread,
                "real_spread": self.real_spread,
                "method": self.method,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {"low_streak": self.low_streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.low_streak = int(state["low_streak"])


# ----------------------------------------------------------------------------- D overpowering


class DOverpoweringDetector:
    """Fires when D's accuracy is >= threshold on real AND fake for `window` steps in a row.

    After firing, the window starts empty, so a persisting problem fires again once per
    window rather than every step.
    """

    kind = "d_overpowering"

    def __init__(self, threshold: float = 0.99, window: int = 200):
        if not 0.5 < threshold <= 1.0 or window < 1:
            raise ConfigError(
                f"d_overpowering needs threshold in (0.5, 1] and window >= 1, got "
                f"threshold={threshold}, window={window}"
            )
        self.threshold, self.window = threshold, window
        self.history: deque[tuple[float, float]] = deque(maxlen=window)

    def update(
        self, acc_real: float | Tensor, acc_fake: float | Tensor, step: int | None = None
    ) -> Event | None:
        """Record one D step's accuracies (d_loss's acc_real / acc_fake)."""
        self.history.append((float(acc_real), float(acc_fake)))
        if len(self.history) < self.window:
            return None
        worst = min(min(pair) for pair in self.history)
        if worst < self.threshold:
            return None
        mean_real = sum(r for r, _ in self.history) / self.window
        mean_fake = sum(f for _, f in self.history) / self.window
        self.history.clear()
        return _event(
            self.kind,
            step,
            {
                "window": self.window,
                "threshold": self.threshold,
                "min_accuracy": worst,
                "mean_acc_real": mean_real,
                "mean_acc_fake": mean_fake,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(pair) for pair in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque((tuple(p) for p in state["history"]), maxlen=self.window)


# ----------------------------------------------------------------------------- posterior collapse


def active_units(mu: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """Burda et al.'s active units: dims whose posterior mean varies across inputs.

    mu: (N, D) posterior means E_q[z|x] for N inputs. Returns (count, variances (D,)).
    """
    if mu.ndim != 2 or mu.shape[0] < 2:
        raise ValueError(f"active_units needs posterior means (N >= 2, D), got {tuple(mu.shape)}")
    variances = mu.detach().double().var(dim=0, correction=1)  # Cov_x(E_q[z|x]) diagonal
    return int((variances > threshold).sum()), variances


class PosteriorCollapseDetector:
    """Fires when most latent dims are both inactive and carry almost no KL.

    Call on an evaluation batch: mu (N, D) from `VAE.encode` and kl_per_dim (D,) from
    `vae_loss`. "Most" = at least `collapsed_fraction` of the D dims.
    """

    kind = "posterior_collapse"

    def __init__(
        self,
        au_threshold: float = 0.01,
        kl_floor: float = 0.01,
        collapsed_fraction: float = 0.9,
    ):
        if au_threshold <= 0 or kl_floor <= 0 or not 0.0 < collapsed_fraction <= 1.0:
            raise ConfigError(
                f"posterior_collapse needs au_threshold > 0, kl_floor > 0 and "
                f"collapsed_fraction in (0, 1], got {au_threshold}, {kl_floor}, "
                f"{collapsed_fraction}"
            )
        self.au_threshold, self.kl_floor = au_threshold, kl_floor
        self.collapsed_fraction = collapsed_fraction

    def check(self, mu: Tensor, kl_per_dim: Tensor, step: int | None = None) -> Event | None:
        n_active, variances = active_units(mu, self.au_threshold)
        dims = int(mu.shape[1])
        if kl_per_dim.shape != (dims,):
            raise ValueError(f"kl_per_dim must have shape ({dims},), got {tuple(kl_per_dim.shape)}")
        low_kl = int((kl_per_dim.detach() < self.kl_floor).sum())
        inactive_frac = (dims - n_active) / dims
        low_kl_frac = low_kl / dims
        if inactive_frac < self.collapsed_fraction or low_kl_frac < self.collapsed_fraction:
            return None
        return _event(
            self.kind,
            step,
            {
                "active_units": n_active,
                "latent_dim": dims,
                "low_kl_dims": low_kl,
                "kl_floor": self.kl_floor,
                "total_kl": float(kl_per_dim.detach().sum()),
                "max_mu_variance": float(variances.max()),
            },
        )
