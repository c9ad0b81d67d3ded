"""Augmentation: train batches change, held-out images never do, and a seed reproduces."""

from __future__ import annotations

import pytest
import torch

from genlab import config
from genlab.config import AugmentSection
from genlab.data.augment import Augmenter, make_augmenter
from genlab.data.images import load_digits_images, split_indices
from genlab.errors import ConfigError

ALL_ON = AugmentSection(hflip_p=0.5, rotate_p=0.5, shift_p=0.5, brightness_p=0.5)
ALL_ON_KEYS = [f"data.augment.{k}_p=0.5" for k in ("hflip", "rotate", "shift", "brightness")]
PIXELS = (0.0, 1.0)  # the value range of the images augmented here


@pytest.fixture(scope="module")
def train_images():
    data = load_digits_images()
    return data.images[split_indices(len(data), data.labels, 0.1, 0.1, seed=0).train]


def _epoch(batches) -> tuple[list[int], torch.Tensor]:
    """One epoch of train batches from the loop's ImageBatches: their ids and images."""
    drawn = [batches.next_batch() for _ in range(len(batches.train_images) // 64)]
    return [i for b in drawn for i in b.ids], torch.cat([b.x for b in drawn])


def test_train_batches_change_and_held_out_batches_do_not(image_batches):
    plain, augmented = image_batches(), image_batches(*ALL_ON_KEYS)
    (plain_ids, plain_x), (aug_ids, aug_x) = _epoch(plain), _epoch(augmented)
    assert plain_ids == aug_ids and plain_x.shape == aug_x.shape  # the same images drawn
    changed = (plain_x - aug_x).flatten(1).abs().sum(1) > 0
    assert 0.7 < changed.float().mean() < 1.0  # each image has 4 coins at p=0.5
    # Held-out images never pass through the augmenter: the val images as they are, and the
    # test split (what `genlab eval --split test` reads) untouched in the data.
    data = load_digits_images()
    assert torch.equal(augmented.val_scaled, data.images[augmented.split.val])
    assert torch.equal(augmented.data.images, data.images)


def test_same_seed_reproduces_other_seed_differs(image_batches):
    runs = [_epoch(image_batches(*ALL_ON_KEYS, f"seed={s}"))[1] for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_augmenter_is_pure_in_its_generator(train_images):
    x = train_images[:32].clone()
    aug = Augmenter(ALL_ON, PIXELS)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(x, train_images[:32])  # input not modified
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_each_transform_alone():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x = torch.rand(6, 3, 8, 8, generator=g())
    flipped = Augmenter(AugmentSection(hflip_p=1.0), PIXELS)(x, g())
    assert torch.equal(flipped, x.flip(-1))

    # whole-pixel shift: a 1-pixel dot moves to another pixel with its value intact
    dot = torch.zeros(6, 1, 8, 8)
    dot[:, :, 4, 4] = 1.0
    shifted = Augmenter(AugmentSection(shift_p=1.0, shift_fraction=0.25), PIXELS)(dot, g())
    assert torch.equal(shifted.flatten(1).sum(1), torch.ones(6))
    assert shifted.max() == 1.0 and not torch.equal(shifted, dot)

    rotated = Augmenter(AugmentSection(rotate_p=1.0, rotate_degrees=30), PIXELS)(x, g())
    assert rotated.shape == x.shape and not torch.allclose(rotated, x)
    unrotated = Augmenter(AugmentSection(rotate_p=1.0, rotate_degrees=0), PIXELS)(x, g())
    assert torch.equal(unrotated, x)

    brighter = Augmenter(AugmentSection(brightness_p=1.0, brightness=0.3), PIXELS)(x, g())
    delta = (brighter - x).flatten(1)
    unclamped = (brighter > 0) & (brighter < 1)
    assert unclamped.any() and (brighter.min() >= 0) and (brighter.max() <= 1)
    # one delta per image: all unclamped pixels of an image move by the same amount
    per_image = [delta[i][unclamped.flatten(1)[i]] for i in range(6)]
    assert all(torch.allclose(d, d[0].expand_as(d), atol=1e-6) for d in per_image)


def test_config_validation_and_disabled_augmenter():
    for override in ("data.augment.hflip_p=1.5", "data.augment.rotate_degrees=500"):
        with pytest.raises(ConfigError, match=override.split("=")[0]) as err:
            config.load(None, ["data.source=digits", "model.family=vae", override])
        assert "\n" not in str(err.value)
    assert make_augmenter(AugmentSection(), PIXELS) is None
    assert isinstance(make_augmenter(ALL_ON, PIXELS), Augmenter)
    # The value range is the fill of uncovered pixels: a shift into [-1, 1] images fills -1.
    shifted = make_augmenter(AugmentSection(shift_p=1.0, shift_fraction=0.4), (-1.0, 1.0))
    out = shifted(torch.ones(8, 1, 8, 8), torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) == {-1.0, 1.0}
