"""PNG grids: layout, nearest-neighbour upscaling, values, bad values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data.images import load_digits_images
from genlab.track.grids import make_grid, save_image_grid, save_reconstruction_grid


def test_make_grid_layout_and_placement():
    images = torch.stack([torch.full((3, 2, 2), i / 10) for i in range(5)])  # (5, 3, 2, 2)
    grid = make_grid(images, nrow=3, padding=1, pad_value=1.0)
    assert grid.shape == (3, 2 * 3 + 1, 3 * 3 + 1)  # 2 rows x 3 columns of 2x2 cells
    assert torch.all(grid[:, 1:3, 1:3] == 0.0)  # image 0 at row 0, column 0
    assert torch.allclose(grid[:, 4:6, 4:6], torch.tensor(0.4))  # image 4: row 1, col 1
    assert torch.all(grid[:, 0, :] == 1.0)  # padding


def test_digits_grid_is_upscaled_nearest_neighbour(tmp_path):
    digits = load_digits_images().images[:10]  # (10, 1, 8, 8)
    path = save_image_grid(digits, tmp_path / "samples" / "step-100.png")
    assert path.exists() and not list(path.parent.glob(".grid-*"))  # no temp left behind
    image = Image.open(path)
    assert image.mode == "L"
    # 4 columns x 3 rows of 8x8 cells with 1 px padding, each pixel -> an 8x8 block
    assert image.size == ((4 * 9 + 1) * 8, (3 * 9 + 1) * 8)
    pixels = np.asarray(image)
    block = pixels[8:16, 8 * 3 : 8 * 4]  # first digit, pixel (0, 2), upscaled
    assert (block == block[0, 0]).all()
    assert block[0, 0] == round(float(digits[0, 0, 0, 2]) * 255)


def test_rgb_grid_clamps_and_survives_nan(tmp_path):
    x = torch.rand(4, 3, 16, 16) * 3 - 1  # out of range
    x[0, :, 0, 0] = float("nan")
    path = save_image_grid(x, tmp_path / "g.png", scale=1, padding=0)
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (32, 32, 3)
    assert (pixels[0, 0] == 0).all()  # NaN drawn black


def test_reconstruction_grid_puts_labelled_originals_above_their_reconstructions(tmp_path):
    originals, recons = torch.zeros(3, 1, 8, 8), torch.ones(3, 1, 8, 8)
    path = save_reconstruction_grid(originals, recons, tmp_path / "recon.png")
    pixels = np.asarray(Image.open(path))
    cell = 9 * 8  # cell + padding, upscaled x8
    assert pixels.shape[0] == 2 * cell + 8  # one row of originals, one of reconstructions
    margin = pixels.shape[1] - (3 * cell + 8)  # the label column at the left
    assert margin > 40
    for col in range(3):  # each reconstruction right below its original
        x = margin + 8 + col * cell + 4
        assert pixels[8 + 4, x] == 0 and pixels[8 + cell + 4, x] == 255
    labels = pixels[:, :margin]
    assert (labels[: cell + 4] < 128).any() and (labels[cell + 4 :] < 128).any()  # text drawn
    with pytest.raises(ValueError, match="same shape"):
        save_reconstruction_grid(originals, recons[:2], tmp_path / "bad.png")
