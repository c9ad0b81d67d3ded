"""PNG grids of images for `samples/`: generated samples, and originals above their labelled
reconstructions. Images come in as (N, C, H, W) floats in [0, 1] (pixel units: map model
outputs back with the scaler's inverse_transform first). Cells are upscaled with nearest
neighbour, so an 8x8 digit shows as crisp blocks instead of a blur.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genlab.fileio import publish

MIN_CELL_PIXELS = 64  # auto upscale until each image is at least this many pixels tall


def make_grid(
    images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.5
) -> Tensor:
    """Tile (N, C, H, W) images into one (C, rows*(H+p)+p, nrow*(W+p)+p) image.

    nrow = images per row (default: about square). Values are clamped to [0, 1]; NaN/inf
    become 0 so a diverged sample is still drawn (black) instead of breaking the file.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"make_grid needs images (N, C, H, W) with N >= 1, got {tuple(images.shape)}"
        )
    x = torch.nan_to_num(images.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    x = x.clamp(0.0, 1.0)
    n, c, h, w = x.shape
    ncol = nrow or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncol)
    grid = torch.full(
        (c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), float(pad_value)
    )
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid


def save_image_grid(
    images: Tensor,
    path: str | Path,
    nrow: int | None = None,
    scale: int | None = None,
    padding: int = 1,
    pad_value: float = 0.5,
) -> Path:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid; returns the path.

    scale = nearest-neighbour upscale factor per pixel (default: enough to make each cell
    >= 64 px). The file is written to a temp name and renamed, so a crash never leaves a
    half-written PNG.
    """
    return _save_png(_grid_image(images, nrow, scale, padding, pad_value), path)


def save_reconstruction_grid(
    originals: Tensor,
    reconstructions: Tensor,
    path: str | Path,
    scale: int | None = None,
    per_row: int = 8,
) -> Path:
    """Originals above their reconstructions: rows of up to `per_row` images alternate
    'original' / 'reconstruction', each row labelled at its left, so every reconstruction
    sits right below the image it reconstructs."""
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"originals {tuple(originals.shape)} and reconstructions "
            f"{tuple(reconstructions.shape)} must have the same shape"
        )
    n, per_row = originals.shape[0], min(per_row, max(1, originals.shape[0]))
    rows, labels = [], []
    for start in range(0, n, per_row):
        for label, source in (("original", originals), ("reconstruction", reconstructions)):
            row = source[start : start + per_row].detach().cpu().float()
            blank = torch.full((per_row - row.shape[0], *row.shape[1:]), 0.5)  # short last row
            rows.append(torch.cat([row, blank]))
            labels.append(label)
    padding = 1
    image = _grid_image(torch.cat(rows), per_row, scale, padding, 0.5)
    return _save_png(_label_rows(image, labels), path)


def _grid_image(images: Tensor, nrow: int | None, scale: int | None, padding: int, pad_value):
    """The upscaled grid as a PIL image (grey for one channel, else RGB)."""
    from PIL import Image

    h = images.shape[-2]
    factor = scale if scale is not None else max(1, math.ceil(MIN_CELL_PIXELS / h))
    grid = make_grid(images, nrow, padding, pad_value)  # (C, GH, GW)
    # nearest neighbour upscaling: repeat each pixel factor x factor times
    grid = grid.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
    array = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)  # (GH, GW, C)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def _label_rows(image, labels: list[str]):
    """`image` with a white margin at its left naming each of its equal-height rows."""
    from PIL import Image, ImageDraw, ImageFont

    row_height = image.height / len(labels)
    font = ImageFont.load_default(size=max(10, min(16, int(row_height * 0.3))))
    probe = ImageDraw.Draw(image)
    margin = int(max(probe.textlength(text, font=font) for text in labels)) + 12
    white = 255 if image.mode == "L" else (255, 255, 255)
    black = 0 if image.mode == "L" else (0, 0, 0)
    labelled = Image.new(image.mode, (image.width + margin, image.height), white)
    labelled.paste(image, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    for i, text in enumerate(labels):
        draw.text((6, (i + 0.5) * row_height), text, fill=black, font=font, anchor="lm")
    return labelled


def _save_png(image, path: str | Path) -> Path:
    """Write a PIL image as PNG via a temp file and a rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".grid-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        publish(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
