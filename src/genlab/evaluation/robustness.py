"""Robustness: how a metric moves when its inputs are perturbed, at growing strength.

Every perturbation has the signature `perturb(inputs, strength, seed) -> perturbed inputs`,
with strength in [0, 1]: 0 returns the inputs unchanged, 1 is the strongest setting. They are
seeded (same seed, same output) and monotone by construction where randomness is involved:
each candidate position draws its random number whatever the strength, so the positions
changed at a low strength are a subset of those changed at a higher one (same seed).

Text perturbations take a string or a list of strings; image perturbations take float
(N, C, H, W) tensors with values in [0, 1].
"""

from __future__ import annotations

import math
import random
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from genlab.errors import ConfigError, DataError
from genlab.evaluation.result import MetricResult

__all__ = [
    "IMAGE_PERTURBATIONS",
    "TEXT_PERTURBATIONS",
    "blur",
    "case_change",
    "char_noise",
    "gaussian_noise",
    "plot_robustness",
    "robustness_table",
    "shift",
    "typos",
    "word_drop",
]

Text = str | list[str]


def _check_strength(strength: float) -> float:
    if not (isinstance(strength, int | float) and 0.0 <= strength <= 1.0):
        raise ConfigError(
            f"perturbation strength must be a number in [0, 1], got {strength!r}; "
            f"use e.g. [0, 0.1, 0.2, 0.4]"
        )
    return float(strength)


def _map_text(
    fn: Callable[[str, float, random.Random], str], text: Text, strength: float, seed: int
) -> Text:
    """Apply a per-string perturbation to a string or a list of strings, with one seeded
    random stream across the list so the whole list is reproducible."""
    strength = _check_strength(strength)
    rng = random.Random(seed)
    if isinstance(text, str):
        return fn(text, strength, rng)
    if not all(isinstance(t, str) for t in text):
        raise DataError(
            f"text perturbations take a string or a list of strings, got {type(text).__name__}; "
            f"decode token ids to text first"
        )
    return [fn(t, strength, rng) for t in text]


# --------------------------------------------------------------------------- text

_NOISE_CHARS = string.ascii_letters + string.digits + string.punctuation


def _char_noise(text: str, strength: float, rng: random.Random) -> str:
    out = []
    for ch in text:
        u, repl = rng.random(), rng.choice(_NOISE_CHARS)  # always draw both: monotone in strength
        out.append(repl if u < strength and not ch.isspace() else ch)
    return "".join(out)


def char_noise(text: Text, strength: float, seed: int = 0) -> Text:
    """Replace each non-space character, with probability `strength`, by a random printable
    ASCII character (letters, digits, punctuation)."""
    return _map_text(_char_noise, text, strength, seed)


def _typos(text: str, strength: float, rng: random.Random) -> str:
    chars = list(text)
    draws = [rng.random() for _ in chars]
    i = 0
    while i < len(chars) - 1:
        if draws[i] < strength and chars[i].isalpha() and chars[i + 1].isalpha():
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            i += 2  # a swapped pair is not swapped again
        else:
            i += 1
    return "".join(chars)


def typos(text: Text, strength: float, seed: int = 0) -> Text:
    """Swap adjacent letters (a typical typing error): each letter pair is swapped with
    probability `strength`."""
    return _map_text(_typos, text, strength, seed)


def _case_change(text: str, strength: float, rng: random.Random) -> str:
    return "".join(ch.swapcase() if rng.random() < strength else ch for ch in text)


def case_change(text: Text, strength: float, seed: int = 0) -> Text:
    """Flip the case of each character with probability `strength`."""
    return _map_text(_case_change, text, strength, seed)


def _word_drop(text: str, strength: float, rng: random.Random) -> str:
    # Each token is a word plus its trailing whitespace, so keeping all tokens is the identity.
    tokens = re.findall(r"\s+|\S+\s*", text)
    kept = [t for t in tokens if not (rng.random() < strength and not t.isspace())]
    return "".join(kept)


def word_drop(text: Text, strength: float, seed: int = 0) -> Text:
    """Delete each word (with its trailing whitespace) with probability `strength`."""
    return _map_text(_word_drop, text, strength, seed)


# --------------------------------------------------------------------------- images


def _check_batch(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(
            f"image perturbations take a float (N, C, H, W) tensor, got {shape}; "
            f"convert images with torch.as_tensor(...).float() / 255"
        )
    return x


def gaussian_noise(x: torch.Tensor, strength: float, seed: int = 0) -> torch.Tensor:
    """Add N(0, strength^2) noise per pixel (std in image units, images in [0, 1]), then
    clip to [0, 1]. The noise draw is the same for every strength (same seed), only scaled."""
    strength = _check_strength(strength)
    x = _check_batch(x)
    if strength == 0:
        return x.clone()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    return (x + strength * noise).clamp(0.0, 1.0)


def blur(x: torch.Tensor, strength: float, seed: int = 0) -> torch.Tensor:
    """Gaussian blur with sigma = strength * min(H, W) / 8 pixels (deterministic; `seed` is
    accepted for the common signature). Borders are reflected, so a flat image stays flat."""
    strength = _check_strength(strength)
    x = _check_batch(x)
    sigma = strength * min(x.shape[-2:]) / 8
    if sigma < 1e-3:
        return x.clone()
    radius = min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1)  # reflect pad must be < size
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (K,)
    c = x.shape[1]
    # Separable: one (1, K) pass along W, one (K, 1) pass along H; groups=C blurs each channel.
    kw = kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1)  # (C, 1, 1, K)
    kh = kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1)  # (C, 1, K, 1)
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kw, groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kh, groups=c)


def shift(x: torch.Tensor, strength: float, seed: int = 0) -> torch.Tensor:
    """Translate each image by round(strength * W / 4) pixels horizontally and
    round(strength * H / 4) vertically, each in a seeded random direction; vacated pixels
    are 0 (no wrap-around)."""
    strength = _check_strength(strength)
    x = _check_batch(x)
    n, _, h, w = x.shape
    dy, dx = round(strength * h / 4), round(strength * w / 4)
    if dx == 0 and dy == 0:
        return x.clone()
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n, 2), generator=gen) * 2 - 1  # (N, 2) of ±1
    padded = F.pad(x, (dx, dx, dy, dy))  # zeros around: (N, C, H + 2dy, W + 2dx)
    out = torch.empty_like(x)
    for i in range(n):
        top = dy - int(signs[i, 0]) * dy  # sign +1 moves content down: crop starts at 0
        left = dx - int(signs[i, 1]) * dx
        out[i] = padded[i, :, top : top + h, left : left + w]
    return out


TEXT_PERTURBATIONS: dict[str, Callable[..., Any]] = {
    "char_noise": char_noise,
    "typos": typos,
    "case_change": case_change,
    "word_drop": word_drop,
}
IMAGE_PERTURBATIONS: dict[str, Callable[..., Any]] = {
    "gaussian_noise": gaussian_noise,
    "blur": blur,
    "shift": shift,
}


# --------------------------------------------------------------------------- table and plot


def _metric_value(v: float | MetricResult) -> float:
    return float(v.value) if isinstance(v, MetricResult) else float(v)


def robustness_table(
    metric_fn: Callable[[Any], float | MetricResult],
    inputs: Any,
    perturbations: dict[str, Callable[..., Any]],
    strengths: Sequence[float],
    seed: int = 0,
) -> list[dict[str, Any]]:
    """metric_fn(perturb(inputs, strength, seed)) for every perturbation and strength.

    Returns one row per (perturbation, strength): {"perturbation", "strength", "metric",
    "delta", "seed"}, where delta = metric - metric on the unperturbed inputs (strength 0).
    metric_fn may return a float or a MetricResult."""
    if not perturbations or not strengths:
        raise ConfigError(
            f"robustness_table needs at least one perturbation and one strength, got "
            f"{len(perturbations)} perturbations and strengths={list(strengths)}; "
            f"e.g. TEXT_PERTURBATIONS and [0, 0.1, 0.3]"
        )
    for s in strengths:
        _check_strength(s)
    baseline = _metric_value(metric_fn(inputs))
    rows = []
    for name, perturb in perturbations.items():
        for s in strengths:
            value = _metric_value(metric_fn(perturb(inputs, float(s), seed)))
            rows.append(
                {
                    "perturbation": name,
                    "strength": float(s),
                    "metric": value,
                    "delta": value - baseline,
                    "seed": seed,
                }
            )
    return rows


def plot_robustness(
    table: list[dict[str, Any]], path: str | Path, metric_name: str = "metric"
) -> Path:
    """Write a PNG with one line per perturbation: metric vs strength (track/figures.py)."""
    from genlab.track.figures import new_figure, save_figure

    if not table:
        raise DataError("the robustness table is empty; run robustness_table first")
    fig, (ax,) = new_figure(6, 4)
    for name in dict.fromkeys(row["perturbation"] for row in table):
        rows = sorted((r for r in table if r["perturbation"] == name), key=lambda r: r["strength"])
        ax.plot([r["strength"] for r in rows], [r["metric"] for r in rows], marker="o", label=name)
    ax.set_xlabel("perturbation strength")
    ax.set_ylabel(metric_name)
    ax.set_title(f"{metric_name} under input perturbations")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, Path(path), dpi=100)
