"""Random image augmentation for the TRAIN split, in plain torch (no torchvision).

An `Augmenter` is a pure function of (batch, torch.Generator): the same generator state gives
the same output, which is what makes augmented runs reproducible and resumable.
`ImageBatches` (training/image_tasks.py) seeds one generator per train batch and augments only
train batches, so held-out metrics are always computed on untouched images.

Each transform is chosen per image with its own probability:
  hflip       mirror left-right
  rotate      rotation by an angle uniform in [-rotate_degrees, rotate_degrees] (bilinear)
  shift       whole-pixel translation by up to shift_fraction of the size (a pad-and-crop),
              whole pixels so 8x8 digits are not blurred
  brightness  add a delta uniform in [-brightness, brightness] times the value range
Images are expected in `value_range` (pixels: (0, 1)); uncovered areas are filled with the
low end of the range (black) and brightness results are clamped to the range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.config import AugmentSection


class Augmenter:
    """Applies the configured random transforms to a train batch (B, C, H, W) whose values
    lie in `value_range` (low, high): the fill of uncovered areas and the brightness scale."""

    def __init__(self, config: AugmentSection, value_range: tuple[float, float]):
        self.config = config
        self.value_range = value_range

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """A new, augmented batch; `x` is not modified. Draws only from `generator`."""
        cfg = self.config
        b = x.shape[0]
        # Draw every random number up front in a fixed order, so enabling one transform
        # does not change the draws of another (and output depends only on the generator).
        u = torch.rand(b, 4, generator=generator)  # per-image "apply?" coins
        angle = (torch.rand(b, generator=generator) * 2 - 1) * cfg.rotate_degrees
        m = round(cfg.shift_fraction * min(x.shape[-2:]))
        shift = torch.randint(-m, m + 1, (b, 2), generator=generator)  # (B, [dy, dx])
        delta = (torch.rand(b, generator=generator) * 2 - 1) * cfg.brightness
        u, angle, shift, delta = (t.to(x.device) for t in (u, angle, shift, delta))

        out = x
        if cfg.hflip_p > 0:
            flip = (u[:, 0] < cfg.hflip_p).view(b, 1, 1, 1)
            out = torch.where(flip, out.flip(-1), out)
        if cfg.rotate_p > 0:
            angle = torch.where(u[:, 1] < cfg.rotate_p, angle, torch.zeros_like(angle))
            out = self._rotate(out, angle)
        if cfg.shift_p > 0 and m > 0:
            shift = torch.where((u[:, 2] < cfg.shift_p).view(b, 1), shift, 0)
            out = self._shift(out, shift)
        if cfg.brightness_p > 0:
            low, high = self.value_range
            delta = torch.where(u[:, 3] < cfg.brightness_p, delta, torch.zeros_like(delta))
            out = (out + delta.view(b, 1, 1, 1) * (high - low)).clamp(low, high)
        return out

    def _rotate(self, x: Tensor, degrees: Tensor) -> Tensor:
        """Rotate each image by its angle (B,) about the centre; 0 degrees is exact."""
        _, _, h, w = x.shape
        low = self.value_range[0]
        rad = degrees * (math.pi / 180.0)
        cos, sin = torch.cos(rad), torch.sin(rad)
        # affine_grid works in coordinates normalised to [-1, 1] per axis; the h/w factors
        # keep the rotation rigid for non-square images.
        theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
        theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # grid_sample pads with zeros; shift so that zero means the range's low end.
        rotated = F.grid_sample(x - low, grid, mode="bilinear", align_corners=False) + low
        keep = (degrees == 0).view(-1, 1, 1, 1)  # bit-exact for unrotated images
        return torch.where(keep, x, rotated)

    def _shift(self, x: Tensor, shift: Tensor) -> Tensor:
        """Translate image i by shift[i] = (dy, dx) whole pixels, filling with the low value."""
        b, _, h, w = x.shape
        m = int(shift.abs().max().item()) if shift.numel() else 0
        if m == 0:
            return x
        padded = F.pad(x, (m, m, m, m), value=self.value_range[0])  # (B, C, H+2m, W+2m)
        rows = torch.arange(h, device=x.device).view(1, h) + m - shift[:, 0:1]  # (B, H)
        cols = torch.arange(w, device=x.device).view(1, w) + m - shift[:, 1:2]  # (B, W)
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        # Advanced indexing around the channel slice gives (B, H, W, C).
        out = padded[batch, :, rows.view(b, h, 1), cols.view(b, 1, w)]
        return out.permute(0, 3, 1, 2).contiguous()


def make_augmenter(config: AugmentSection, value_range: tuple[float, float]) -> Augmenter | None:
    """None when every transform's probability is 0, so the train batches skip the step."""
    probabilities = (config.hflip_p, config.rotate_p, config.shift_p, config.brightness_p)
    return Augmenter(config, value_range) if any(p > 0 for p in probabilities) else None
