"""Image sources, splitting, and the batches the training loop draws from them."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from genlab.data.images import load_digits_images, load_image_folder, split_indices
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


def test_image_batches_walk_a_shuffled_epoch_and_resume_at_the_exact_batch(image_batches):
    data = load_digits_images()
    split = split_indices(len(data), data.labels, 0.1, 0.1, seed=1337)  # the config's seed
    batches = image_batches()
    assert torch.equal(batches.split.test, split.test)
    # Held out: the val images in split order, untouched (minmax of the digits' [0, 1] pixels
    # onto the VAE's [0, 1] is the identity).
    assert torch.equal(batches.val_scaled, data.images[split.val])

    epoch = [batches.next_batch() for _ in range(len(split.train) // 64)]
    ids = [i for b in epoch for i in b.ids]
    assert len(set(ids)) == len(ids)  # no train image twice in one epoch
    assert ids != sorted(ids)  # shuffled
    for b in epoch[:3]:  # a batch holds the train images its ids name
        assert torch.equal(b.x, data.images[split.train[b.ids]])

    # Resuming from the state after batch 3 gives batch 4 again, augmentation included.
    augment = ["data.augment.hflip_p=0.5", "data.augment.shift_p=0.5"]
    first = image_batches(*augment)
    for _ in range(3):
        first.next_batch()
    state = first.state_dict()
    fourth = first.next_batch()
    resumed = image_batches(*augment)
    resumed.load_state_dict(state)
    again = resumed.next_batch()
    assert again.ids == fourth.ids and torch.equal(again.x, fourth.x)
