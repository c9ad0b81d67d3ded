"""Image sources, splitting and the batch loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.config import AugmentSection
from genlab.data.augment import Augmenter
from genlab.data.images import (
    ImageLoader,
    load_digits_images,
    load_image_folder,
    split_indices,
)
from genlab.errors import ConfigError, DataError


def _write_png(path, size=(12, 10), color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def class_folder(tmp_path):
    """Two classes of small PNGs, one garbage .png and one truncated .png."""
    for i in range(3):
        _write_png(tmp_path / "cats" / f"c{i}.png", color=(255, 0, 0))
        _write_png(tmp_path / "dogs" / f"d{i}.png", color=(0, 0, 255))
    (tmp_path / "dogs" / "garbage.png").write_bytes(b"this is not a png at all")
    good = (tmp_path / "cats" / "c0.png").read_bytes()
    (tmp_path / "cats" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "cats" / "notes.txt").write_text("ignored: not an image suffix")
    return tmp_path


def test_digits_are_bundled_8x8_in_unit_range():
    data = load_digits_images()
    assert data.images.shape == (1797, 1, 8, 8)
    assert data.images.dtype == torch.float32
    assert data.images.min() == 0.0 and data.images.max() == 1.0
    # pixel units were integers 0..16, so every value is a multiple of 1/16
    assert torch.allclose(data.images * 16, (data.images * 16).round())
    assert data.labels is not None and set(data.labels.tolist()) == set(range(10))
    assert data.class_names == tuple(str(i) for i in range(10))
    assert data.image_shape == (1, 8, 8)


def test_folder_skips_and_counts_bad_files(class_folder):
    data = load_image_folder(class_folder, image_size=16, channels=3)
    assert data.images.shape == (6, 3, 16, 16)
    assert data.counts == {"found": 8, "loaded": 6, "skipped": 2}
    assert {p.split("/")[-1] for p in data.skipped_files} == {"garbage.png", "truncated.png"}
    assert data.class_names == ("cats", "dogs")
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # colours survive: cats are red, dogs are blue
    assert torch.allclose(data.images[0, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(data.images[5, :, 5, 5], torch.tensor([0.0, 0.0, 1.0]))


def test_folder_error_mode_names_the_bad_file(class_folder):
    with pytest.raises(DataError, match=r"(garbage|truncated)\.png"):
        load_image_folder(class_folder, image_size=8, channels=1, on_bad_file="error")


def test_folder_unlabeled_grayscale_and_rectangular(tmp_path):
    for i in range(2):
        _write_png(tmp_path / f"{i}.png", color=(255, 255, 255))
    Image.new("L", (5, 5), 0).save(tmp_path / "black.jpg", format="JPEG")
    data = load_image_folder(tmp_path, image_size=(6, 10), channels=1)
    assert data.images.shape == (3, 1, 6, 10)
    assert data.labels is None and data.class_names == ()
    assert data.images[2].max() < 0.05 and data.images[0].min() > 0.95


def test_folder_user_errors(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        load_image_folder(tmp_path / "missing", 8)
    with pytest.raises(DataError, match="no PNG/JPEG"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1"):
        load_image_folder(tmp_path, 8)
    with pytest.raises(ConfigError, match="channels"):
        load_image_folder(tmp_path, 8, channels=2)
    with pytest.raises(ConfigError, match="on_bad_file"):
        load_image_folder(tmp_path, 8, on_bad_file="ignore")
    _write_png(tmp_path / "cls" / "a.png")
    with pytest.raises(DataError, match="mixes"):
        load_image_folder(tmp_path, 8)


def test_split_is_disjoint_seeded_and_stratified():
    data = load_digits_images()
    s = split_indices(len(data), data.labels, val_fraction=0.1, test_fraction=0.2, seed=3)
    all_idx = torch.cat([s.train, s.val, s.test])
    assert len(all_idx) == len(data) and len(set(all_idx.tolist())) == len(data)
    assert abs(len(s.test) - 0.2 * len(data)) <= 1 and abs(len(s.val) - 0.1 * len(data)) <= 1
    # stratified: every class has close to its overall share in the test split
    overall = torch.bincount(data.labels, minlength=10).double() / len(data)
    in_test = torch.bincount(data.labels[s.test], minlength=10).double() / len(s.test)
    assert (overall - in_test).abs().max() < 0.01
    again = split_indices(len(data), data.labels, 0.1, 0.2, seed=3)
    other = split_indices(len(data), data.labels, 0.1, 0.2, seed=4)
    assert torch.equal(again.test, s.test) and not torch.equal(other.test, s.test)
    # test set does not move when only val_fraction changes
    assert torch.equal(split_indices(len(data), data.labels, 0.3, 0.2, seed=3).test, s.test)


def test_split_rejects_bad_fractions_and_unsplittable_data():
    with pytest.raises(ConfigError, match="< 1"):
        split_indices(100, None, 0.5, 0.5)
    with pytest.raises(ConfigError, match="val_fraction"):
        split_indices(100, None, -0.1, 0.1)
    labels = torch.tensor([0] * 9 + [1])  # class 1 has a single image: cannot stratify
    with pytest.raises(DataError, match="stratify"):
        split_indices(10, labels, 0.2, 0.2)
    s = split_indices(10, labels, 0.2, 0.2, stratify=False)
    assert (len(s.train), len(s.val), len(s.test)) == (6, 2, 2)


def test_loader_batches_order_and_resume():
    data = load_digits_images()
    val = ImageLoader(data, "val", batch_size=100)
    batches = list(val)
    assert len(batches) == len(val) == 18 and batches[-1][0].shape[0] == 97
    assert torch.equal(batches[0][0], data.images[:100])  # val: in order, untouched

    train = ImageLoader(data, "train", batch_size=64, seed=1)
    it = iter(train)
    first = [next(it)[1] for _ in range(3)]
    state = train.state_dict()
    fourth = next(it)[1]
    resumed = ImageLoader(data, "train", batch_size=64, seed=1)
    resumed.load_state_dict(state)
    assert torch.equal(next(iter(resumed))[1], fourth)
    assert not torch.equal(first[0], data.labels[:64])  # train is shuffled


def test_loader_refuses_augmenting_held_out_splits():
    data = load_digits_images()
    aug = Augmenter(AugmentSection(hflip_p=1.0), (0.0, 1.0))
    for split in ("val", "test"):
        with pytest.raises(ConfigError, match="train split only"):
            ImageLoader(data, split, batch_size=8, augmenter=aug)
    assert np.isclose(len(ImageLoader(data, "train", batch_size=100, augmenter=aug)), 17)
