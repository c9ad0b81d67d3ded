"""Scalers: fitted on train only, exact round trips, JSON state."""

from __future__ import annotations

import json

import pytest
import torch

from genlab.data.scale import (
    MinMaxScaler,
    StandardScaler,
    _view,
    make_scaler,
    scaler_from_state_dict,
)
from genlab.errors import CheckpointError, ConfigError, DataError


@pytest.fixture
def pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 3, 8, 8, generator=g) * 0.8 + 0.1  # (N, C, H, W) in [0.1, 0.9]
    x[:, 2] *= 0.5  # channels with different statistics
    return x


@pytest.mark.parametrize(
    "scaler",
    [MinMaxScaler((-1, 1)), MinMaxScaler((0, 1)), StandardScaler()],
    ids=["minmax-pm1", "minmax-01", "standard"],
)
def test_round_trip_to_pixels(scaler, pixels):
    train, other = pixels[:40], pixels[40:]
    scaler.fit(train)
    for x in (train, other):
        if scaler.kind == "minmax":  # minmax round-trips inside the train range (it clamps)
            x = torch.maximum(
                torch.minimum(x, _view(scaler.data_max, x)), _view(scaler.data_min, x)
            )
        y = scaler.transform(x)
        assert not torch.allclose(y, x)
        assert torch.allclose(scaler.inverse_transform(y), x, atol=1e-6)


def test_minmax_keeps_held_out_images_in_the_target_range(pixels):
    """A val pixel outside the train range stays in [0, 1], what a VAE's BCE accepts."""
    train = pixels[:40] * 0.5 + 0.25  # train pixels span [0.25, 0.75] at most
    held_out = pixels[40:]  # reaches 0 and 1: outside the train range
    y = MinMaxScaler((0.0, 1.0)).fit(train).transform(held_out)
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert (y == 0.0).any() and (y == 1.0).any()  # clamped, not rescaled


def test_minmax_hits_the_target_range_per_channel(pixels):
    y = MinMaxScaler((-1, 1)).fit(pixels).transform(pixels)
    per_channel = y.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.min(1).values, torch.full((3,), -1.0), atol=1e-6)
    assert torch.allclose(per_channel.max(1).values, torch.full((3,), 1.0), atol=1e-6)


def test_standard_gives_zero_mean_unit_std_on_train(pixels):
    y = StandardScaler().fit(pixels).transform(pixels).transpose(0, 1).flatten(1)
    assert torch.allclose(y.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(1, correction=0), torch.ones(3), atol=1e-5)


def test_statistics_come_from_the_data_it_was_fitted_on(pixels):
    train = pixels[:40]
    shifted = pixels[40:] + 5.0  # val/test far away: must not move the train statistics
    a = StandardScaler().fit(train)
    b = StandardScaler().fit(torch.cat([train, shifted]))
    assert not torch.allclose(a.mean, b.mean)


@pytest.mark.parametrize("kind", ["minmax", "standard"])
def test_state_dict_is_json_and_rebuilds(kind, pixels):
    scaler = make_scaler(kind, (0.0, 1.0)).fit(pixels)
    state = json.loads(json.dumps(scaler.state_dict()))
    rebuilt = scaler_from_state_dict(state)
    assert rebuilt.kind == kind
    assert torch.allclose(rebuilt.transform(pixels), scaler.transform(pixels), atol=1e-6)


def test_constant_channel_does_not_divide_by_zero():
    x = torch.zeros(4, 1, 2, 2)
    for scaler in (MinMaxScaler(), StandardScaler()):
        y = scaler.fit(x).transform(x)
        assert torch.isfinite(y).all()
        assert torch.allclose(scaler.inverse_transform(y), x)


def test_user_errors():
    with pytest.raises(ConfigError, match="unknown scaler 'robust'"):
        make_scaler("robust")
    with pytest.raises(ConfigError, match="low < high"):
        MinMaxScaler((1.0, -1.0))
    with pytest.raises(DataError, match="N, C, H, W"):
        StandardScaler().fit(torch.zeros(0, 1, 2, 2))
    with pytest.raises(CheckpointError, match="unknown kind"):
        scaler_from_state_dict({"kind": "nope"})
    with pytest.raises(RuntimeError, match="before fit"):
        MinMaxScaler().transform(torch.zeros(1, 1, 2, 2))
