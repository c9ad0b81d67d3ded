"""Scalers between pixel units ([0, 1]) and the range a model trains in.

`minmax` maps each channel's [min, max] to a target range: [-1, 1] for a tanh GAN generator,
[0, 1] for a VAE with a BCE reconstruction term; values outside the train range are clamped
to the target range (a val image may hold a pixel no train image reaches). `standard` gives
each channel zero mean and unit variance. Both are fitted on the TRAIN split only (fitting
on val/test would leak their statistics), and `inverse_transform` maps model samples back to
pixels for grids and metrics.

`state_dict()` is plain JSON (lists of floats) so a run directory can store it next to the
config; `scaler_from_state_dict` rebuilds either kind.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from genlab.errors import CheckpointError, ConfigError, DataError


@runtime_checkable
class Scaler(Protocol):
    kind: str

    def fit(self, x: Tensor) -> Scaler: ...

    def transform(self, x: Tensor) -> Tensor: ...

    def inverse_transform(self, y: Tensor) -> Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...


def _per_channel(x: Tensor, what: str) -> Tensor:
    """(N, C, H, W) -> (C, N*H*W), so statistics are per channel."""
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(
            f"{what} needs a non-empty batch of images (N, C, H, W), got shape "
            f"{tuple(x.shape)}; pass the train split's images"
        )
    return x.transpose(0, 1).reshape(x.shape[1], -1).double()


def _view(v: Tensor, like: Tensor) -> Tensor:
    """(C,) statistics -> (1, C, 1, 1) in like's dtype/device, to broadcast over a batch."""
    return v.to(device=like.device, dtype=like.dtype).view(1, -1, 1, 1)


class MinMaxScaler:
    """Per-channel affine map of the train data's [min, max] onto `feature_range`."""

    kind = "minmax"

    def __init__(self, feature_range: tuple[float, float] = (-1.0, 1.0)):
        low, high = (float(v) for v in feature_range)
        if not low < high:
            raise ConfigError(
                f"scale feature_range must have low < high, got {tuple(feature_range)}; "
                "use [-1, 1] (GAN, tanh output) or [0, 1] (VAE with BCE)"
            )
        self.feature_range = (low, high)
        self.data_min: Tensor | None = None  # (C,)
        self.data_max: Tensor | None = None  # (C,)

    def fit(self, x: Tensor) -> MinMaxScaler:
        flat = _per_channel(x, "MinMaxScaler.fit")
        self.data_min, self.data_max = flat.min(dim=1).values, flat.max(dim=1).values
        return self

    def _scale(self) -> tuple[Tensor, Tensor]:
        if self.data_min is None or self.data_max is None:
            raise RuntimeError("MinMaxScaler used before fit(); fit it on the train split")
        span = self.data_max - self.data_min
        span = torch.where(span > 0, span, torch.ones_like(span))  # constant channel: no /0
        low, high = self.feature_range
        return (high - low) / span, self.data_min

    def transform(self, x: Tensor) -> Tensor:
        """Onto feature_range, clamped: a val/test pixel outside the train split's range
        (brighter or darker than any training pixel) lands on the range's edge, so the
        range a model's output and loss rely on (tanh, BCE's [0, 1]) holds for every split."""
        scale, data_min = self._scale()
        low, high = self.feature_range
        return ((x - _view(data_min, x)) * _view(scale, x) + low).clamp(low, high)

    def inverse_transform(self, y: Tensor) -> Tensor:
        scale, data_min = self._scale()
        return (y - self.feature_range[0]) / _view(scale, y) + _view(data_min, y)

    def state_dict(self) -> dict[str, Any]:
        self._scale()  # refuses an unfitted scaler
        return {
            "kind": self.kind,
            "feature_range": list(self.feature_range),
            "data_min": self.data_min.tolist(),
            "data_max": self.data_max.tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MinMaxScaler:
        scaler = cls(tuple(state["feature_range"]))
        scaler.data_min = torch.tensor(state["data_min"], dtype=torch.float64)
        scaler.data_max = torch.tensor(state["data_max"], dtype=torch.float64)
        return scaler


class StandardScaler:
    """Per-channel (x - mean) / std with the train data's statistics."""

    kind = "standard"

    def __init__(self, eps: float = 1e-8):
        self.eps = float(eps)
        self.mean: Tensor | None = None  # (C,)
        self.std: Tensor | None = None  # (C,)

    def fit(self, x: Tensor) -> StandardScaler:
        flat = _per_channel(x, "StandardScaler.fit")
        self.mean = flat.mean(dim=1)
        std = flat.std(dim=1, correction=0)
        self.std = torch.where(std > self.eps, std, torch.ones_like(std))  # constant channel
        return self

    def _stats(self) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("StandardScaler used before fit(); fit it on the train split")
        return self.mean, self.std

    def transform(self, x: Tensor) -> Tensor:
        mean, std = self._stats()
        return (x - _view(mean, x)) / _view(std, x)

    def inverse_transform(self, y: Tensor) -> Tensor:
        mean, std = self._stats()
        return y * _view(std, y) + _view(mean, y)

    def state_dict(self) -> dict[str, Any]:
        mean, std = self._stats()
        return {"kind": self.kind, "eps": self.eps, "mean": mean.tolist(), "std": std.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> StandardScaler:
        scaler = cls(state.get("eps", 1e-8))
        scaler.mean = torch.tensor(state["mean"], dtype=torch.float64)
        scaler.std = torch.tensor(state["std"], dtype=torch.float64)
        return scaler


SCALERS = {"minmax": MinMaxScaler, "standard": StandardScaler}


def make_scaler(kind: str, feature_range: tuple[float, float] = (-1.0, 1.0)) -> Scaler:
    """An unfitted scaler by name: 'minmax' (to feature_range) or 'standard'."""
    if kind == "minmax":
        return MinMaxScaler(feature_range)
    if kind == "standard":
        return StandardScaler()
    raise ConfigError(
        f"unknown scaler {kind!r}; set data.scale to one of {', '.join(sorted(SCALERS))}"
    )


def scaler_from_state_dict(state: dict[str, Any]) -> Scaler:
    """Rebuild a fitted scaler from its `state_dict()` (e.g. read from the run directory)."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind not in SCALERS:
        raise CheckpointError(
            f"stored scaler state has unknown kind {kind!r}; expected one of "
            f"{', '.join(sorted(SCALERS))}; the run directory may be from another version"
        )
    return SCALERS[kind].from_state_dict(state)
