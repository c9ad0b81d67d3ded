"""Prepared images are cached (data/image_cache.py): the cached images and split equal what
loading and splitting gives (data/images.py, itself checked against scikit-learn), a later
process reads them without importing scikit-learn, and a changed file, a damaged cache or an
unwritable one never gives wrong data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from genlab.config import DataConfig
from genlab.data import image_cache, storage
from genlab.data.images import load_digits_images, load_image_folder, split_indices
from genlab.track.console import make_console


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(storage.CACHE_ENV, str(root))
    return root


def _folder(root, colors=((255, 0, 0), (0, 0, 255))):
    for label, color in zip(("cats", "dogs"), colors):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            Image.new("RGB", (10, 12), tuple(max(0, c - 20 * i) for c in color)).save(
                root / label / f"{i}.png"
            )
    (root / "dogs" / "garbage.png").write_bytes(b"not a png")
    return root


def _assert_same(got, want_data, want_split):
    data, split = got
    assert torch.equal(data.images, want_data.images)
    if want_data.labels is None:
        assert data.labels is None
    else:
        assert torch.equal(data.labels, want_data.labels)
    assert data.class_names == want_data.class_names
    assert data.counts == want_data.counts and data.skipped_files == want_data.skipped_files
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(split, name), getattr(want_split, name))


def _entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_digits_are_loaded_split_and_cached_once(cache):
    cfg = DataConfig(source="digits", split={"val": 0.1, "test": 0.2})
    want = load_digits_images()
    want_split = split_indices(len(want), want.labels, 0.1, 0.2, seed=7)
    _assert_same(image_cache.prepared_images(cfg, 7), want, want_split)
    (key,) = _entries(cache)
    manifest = json.loads((cache / key / "manifest.json").read_text())
    assert manifest["kind"] == "images" and manifest["cache_key"] == key
    _assert_same(image_cache.prepared_images(cfg, 7), want, want_split)  # from the cache
    assert _entries(cache) == [key]
    other = image_cache.prepared_images(cfg, 8)  # another seed: another split, another entry
    assert not torch.equal(other[1].test, want_split.test) and len(_entries(cache)) == 2


def test_a_later_process_reads_the_cache_without_scikit_learn(cache):
    code = (
        "import sys\n"
        "from genlab.config import DataConfig\n"
        "from genlab.data.image_cache import prepared_images\n"
        "data, split = prepared_images(DataConfig(source='digits'), 3)\n"
        "print(len(data), len(split.train), 'sklearn' in sys.modules)\n"
    )
    env = {**os.environ, storage.CACHE_ENV: str(cache)}
    runs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    first, second = (r.stdout.split() for r in runs)
    assert first[:2] == second[:2] and first[0] == "1797"
    assert first[2] == "True" and second[2] == "False"


def test_a_folder_is_cached_with_its_skipped_files_and_rebuilt_when_a_file_changes(tmp_path, cache):
    root = _folder(tmp_path / "images")
    cfg = DataConfig(source=str(root), image_size=8, channels=3)

    def expected():
        data = load_image_folder(root, 8, 3)
        return data, split_indices(len(data), data.labels, cfg.val_fraction, cfg.test_fraction, 1)

    _assert_same(image_cache.prepared_images(cfg, 1), *expected())
    assert image_cache.prepared_images(cfg, 1)[0].counts["skipped"] == 1  # read back
    first = _entries(cache)
    Image.new("RGB", (10, 12), (0, 255, 0)).save(root / "cats" / "0.png")  # an edited image
    os.utime(root / "cats" / "0.png", ns=(1, 1))  # even with an old timestamp
    _assert_same(image_cache.prepared_images(cfg, 1), *expected())
    Image.new("RGB", (10, 12), (9, 9, 9)).save(root / "dogs" / "new.png")  # an added image
    got = image_cache.prepared_images(cfg, 1)
    _assert_same(got, *expected())
    assert len(got[0]) == 13 and len(_entries(cache)) == 3 and first[0] in _entries(cache)
    resized = image_cache.prepared_images(DataConfig(source=str(root), image_size=4), 1)
    assert resized[0].images.shape[-2:] == (4, 4)


@pytest.mark.parametrize("damage", ["flipped-byte", "truncated-manifest", "missing-tensors"])
def test_a_damaged_cache_entry_is_built_again(cache, damage):
    cfg = DataConfig(source="digits")
    want = load_digits_images()
    want_split = split_indices(len(want), want.labels, cfg.val_fraction, cfg.test_fraction, 5)
    image_cache.prepared_images(cfg, 5)
    (key,) = _entries(cache)
    tensors, manifest = cache / key / image_cache.TENSORS, cache / key / "manifest.json"
    if damage == "flipped-byte":
        raw = bytearray(tensors.read_bytes())
        raw[-10] ^= 0xFF  # inside the image data: the header still parses
        tensors.write_bytes(bytes(raw))
    elif damage == "truncated-manifest":
        manifest.write_text(manifest.read_text()[:40])
    else:
        tensors.unlink()
    _assert_same(image_cache.prepared_images(cfg, 5), want, want_split)
    _assert_same(image_cache.prepared_images(cfg, 5), want, want_split)  # the rebuilt entry
    assert storage.file_sha256(tensors) == json.loads(manifest.read_text())["sha256"]


def test_a_cache_that_cannot_be_written_is_a_warning_and_the_images_still_load(
    tmp_path, monkeypatch
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(storage.CACHE_ENV, str(blocker / "cache"))
    cfg = DataConfig(source="digits")
    console = make_console(stderr=True)
    with console.capture() as captured:
        got = image_cache.prepared_images(cfg, 2, console)
    want = load_digits_images()
    want_split = split_indices(len(want), want.labels, cfg.val_fraction, cfg.test_fraction, 2)
    _assert_same(got, want, want_split)
    warning = captured.get()
    assert warning.startswith("warning: the prepared images could not be cached")
    assert warning.count("\n") == 1 and blocker.read_text() == "not a directory"


def test_pixels_are_stored_as_8_bit_levels_and_read_back_to_the_same_floats(tmp_path, cache):
    """A folder's pixels are k/255 and the digits' k/16: kept as uint8 (a quarter of the
    bytes) and divided again on reading, bit for bit what the loader gave."""
    from safetensors import safe_open

    root = _folder(tmp_path / "images")
    for cfg, levels in (
        (DataConfig(source=str(root), image_size=8), 255),
        (DataConfig(source="digits"), 16),
    ):
        image_cache.prepared_images(cfg, 0)  # built
        loaded = load_image_folder(root, 8, 3) if levels == 255 else load_digits_images()
        data, _ = image_cache.prepared_images(cfg, 0)  # read back
        assert data.images.dtype == torch.float32
        assert torch.equal(data.images, loaded.images)
        entry = next(
            d for d in cache.iterdir()
            if json.loads((d / "manifest.json").read_text())["levels"] == levels
        )  # fmt: skip
        with safe_open(entry / image_cache.TENSORS, "pt") as f:
            assert f.get_tensor("images").dtype == torch.uint8
    odd = torch.rand(4, 1, 2, 2)  # not on either grid: kept as floats
    levels, kept = image_cache._as_levels(odd)
    assert levels == 0 and kept is odd


def test_a_file_that_cannot_be_hashed_loads_uncached_not_a_crash(tmp_path, cache, monkeypatch):
    """The key reads every image; one it cannot read (permissions, a vanished mount) leaves
    the images to the loader, which skips or names an unreadable file, as without a cache."""
    root = _folder(tmp_path / "images")
    hash_file = storage.file_sha256

    def refuse(path):
        if path.name == "0.png":
            raise PermissionError(13, "Permission denied", str(path))
        return hash_file(path)

    monkeypatch.setattr(storage, "file_sha256", refuse)
    cfg = DataConfig(source=str(root), image_size=8)
    data, split = image_cache.prepared_images(cfg, 0)
    want = load_image_folder(root, 8, 3)
    want_split = split_indices(len(want), want.labels, cfg.val_fraction, cfg.test_fraction, 0)
    _assert_same((data, split), want, want_split)
    assert _entries(cache) == []
