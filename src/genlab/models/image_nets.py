"""Encoder/decoder blocks sized from the image shape, shared by the VAE and the GAN.

An encoder maps images (B, C, H, W) to vectors (B, F): the VAE encoder (F = 2 * latent) and
the GAN discriminator (F = 1). A decoder maps vectors (B, F) to images (B, C, H, W) with no
output activation: the VAE decoder and the GAN generator (which adds tanh).

Conv nets halve the spatial size with stride-2 convs while both sides are even and above 4
(32 -> 16 -> 8 -> 4, 28 -> 14 -> 7), then one linear layer; the decoder mirrors this with
stride-2 transposed convs, so every size built from a small base by doubling comes out exact.
Channels double at each halving (capped). For tiny images (8x8 digits) an MLP is as good and
faster: `arch="auto"` picks the MLP when the larger side is <= 8.
"""

from __future__ import annotations

from typing import Literal

import torch.nn as nn
from torch import Tensor
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from genlab.config import ImageArch
from genlab.errors import ConfigError

Norm = Literal["batch", "group", "none"]


def down_plan(height: int, width: int) -> tuple[int, int, int]:
    """(number of stride-2 halvings, smallest height, smallest width) for an image size."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > 4:
        height, width, n = height // 2, width // 2, n + 1
    return n, height, width


def resolve_arch(arch: str, image_shape: tuple[int, int, int]) -> Literal["mlp", "conv"]:
    """'auto' -> 'mlp' for tiny images (larger side <= 8), else 'conv'."""
    if arch not in ("auto", "mlp", "conv"):
        raise ConfigError(f"model.arch must be 'auto', 'mlp' or 'conv', got {arch!r}")
    if arch == "auto":
        return "mlp" if max(image_shape[1:]) <= 8 else "conv"
    return arch


def check_image_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate (C, H, W): 1 or 3 channels, sides of at least 4 pixels."""
    if len(image_shape) != 3:
        raise ConfigError(f"image shape must be (channels, height, width), got {image_shape}")
    c, h, w = (int(v) for v in image_shape)
    if c not in (1, 3) or min(h, w) < 4:
        raise ConfigError(
            f"image models need 1 or 3 channels and sides >= 4 pixels, got (C, H, W) = "
            f"{(c, h, w)}; set data.channels to 1 or 3 and data.image_size >= 4"
        )
    return c, h, w


def _sn(layer: nn.Module, enabled: bool) -> nn.Module:
    """Spectral norm (Miyato et al. 2018) bounds the layer's Lipschitz constant by ~1."""
    return _spectral_norm(layer) if enabled else layer


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_features)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        out_features: int,
        base_channels: int = 32,
        max_channels: int = 256,
        norm: Norm = "group",
        spectral_norm: bool = False,
    ):
        super().__init__()
        c, h, w = check_image_shape(image_shape)
        n_down, h_min, w_min = down_plan(h, w)
        ch = base_channels
        layers: list[nn.Module] = [
            _sn(nn.Conv2d(c, ch, 3, padding=1), spectral_norm),  # stem keeps H, W
            nn.LeakyReLU(0.2),
        ]
        for _ in range(n_down):
            nxt = min(ch * 2, max_channels)
            # kernel 4, stride 2, padding 1 halves an even size exactly
            layers += [_sn(nn.Conv2d(ch, nxt, 4, 2, 1), spectral_norm), _norm2d(norm, nxt)]
            layers += [nn.LeakyReLU(0.2)]
            ch = nxt
        self.features = nn.Sequential(*layers)  # (B, ch, h_min, w_min)
        self.head = _sn(nn.Linear(ch * h_min * w_min, out_features), spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """(B, in_features) -> (B, C, H, W), unbounded (callers add sigmoid/tanh as they need)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        in_features: int,
        base_channels: int = 32,
        max_channels: int = 256,
        norm: Norm = "batch",
    ):
        super().__init__()
        c, h, w = check_image_shape(image_shape)
        n_down, h_min, w_min = down_plan(h, w)
        ch = min(base_channels * 2**n_down, max_channels)
        self.start_shape = (ch, h_min, w_min)
        self.project = nn.Linear(in_features, ch * h_min * w_min)
        layers: list[nn.Module] = [_norm2d(norm, ch), nn.ReLU()]
        for _ in range(n_down):
            nxt = max(ch // 2, base_channels)
            # the transposed twin of the encoder's conv: doubles the size exactly
            layers += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1), _norm2d(norm, nxt), nn.ReLU()]
            ch = nxt
        layers.append(nn.Conv2d(ch, c, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        x = self.project(z).view(z.shape[0], *self.start_shape)  # (B, ch, h_min, w_min)
        return self.body(x)  # (B, C, H, W)


class MLPEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_features) through two hidden layers."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        out_features: int,
        hidden: int = 256,
        spectral_norm: bool = False,
    ):
        super().__init__()
        c, h, w = check_image_shape(image_shape)
        self.net = nn.Sequential(
            nn.Flatten(),  # (B, C*H*W)
            _sn(nn.Linear(c * h * w, hidden), spectral_norm),
            nn.LeakyReLU(0.2),
            _sn(nn.Linear(hidden, hidden), spectral_norm),
            nn.LeakyReLU(0.2),
            _sn(nn.Linear(hidden, out_features), spectral_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """(B, in_features) -> (B, C, H, W), unbounded."""

    def __init__(self, image_shape: tuple[int, int, int], in_features: int, hidden: int = 256):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        c, h, w = self.image_shape
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, c * h * w),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)


def make_encoder(
    image_shape: tuple[int, int, int],
    out_features: int,
    arch: ImageArch,
    base_channels: int,
    hidden: int,
    norm: Norm,
    spectral_norm: bool = False,
) -> nn.Module:
    """An encoder (B, C, H, W) -> (B, out_features) of the resolved architecture."""
    if resolve_arch(arch, image_shape) == "mlp":
        return MLPEncoder(image_shape, out_features, hidden, spectral_norm)
    return ConvEncoder(
        image_shape, out_features, base_channels, norm=norm, spectral_norm=spectral_norm
    )


def make_decoder(
    image_shape: tuple[int, int, int],
    in_features: int,
    arch: ImageArch,
    base_channels: int,
    hidden: int,
    norm: Norm,
) -> nn.Module:
    """A decoder (B, in_features) -> (B, C, H, W) of the resolved architecture."""
    if resolve_arch(arch, image_shape) == "mlp":
        return MLPDecoder(image_shape, in_features, hidden)
    return ConvDecoder(image_shape, in_features, base_channels, norm=norm)
