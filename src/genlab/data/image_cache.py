"""Image datasets prepared once: the loaded images (the bundled digits or a folder of PNG/JPEG
files, resized) and their seeded split, written under the data cache and read back by every
later process that asks for the same data.

Without it every `genlab` process of an image run (train, resume, eval, generate, compress,
export, each rank of a data-parallel run) decoded the whole folder again, or imported
scikit-learn (~1-2.5 s) to read the digits and draw the split. The cache is keyed like a text
dataset (storage.cache_key): the settings that change the result (source, image size,
channels, what to do with a bad file, split fractions, seed, the scikit-learn version that
draws the split) and each source file's path, size, mtime and content hash, so an edited,
added or removed image is a new key.

Layout of `<cache root>/<key>/`:
    images.safetensors   images (N, C, H, W): uint8 levels when every pixel is level/levels
                         as the loaders make them (folders: /255, digits: /16), which read
                         back to the same float32 values at a quarter of the bytes, else
                         float32 in [0, 1]; labels (N,) int64 when the data has classes;
                         train / val / test index tensors (int64, sorted)
    manifest.json        the cache key, the file's sha256, `levels` (0: stored as floats),
                         class names, file counts and the skipped files; written last
A read checks the file against its sha256; a directory that fails (damaged, unfinished, built
for another key) is built again. A cache that cannot be written (a full or read-only disk) is
a warning: the run goes on with the images it loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from genlab.config import DataConfig
from genlab.data import storage
from genlab.data.images import (
    ImageData,
    SplitIndices,
    list_image_files,
    load_digits_images,
    load_image_folder,
    split_indices,
)
from genlab.errors import CheckpointError
from genlab.fileio import atomic_write_text, publish, write_durable

FORMAT_VERSION = 2  # 2: pixels stored as uint8 levels when exact
TENSORS = "images.safetensors"
SPLITS = ("train", "val", "test")


def prepared_images(
    cfg: DataConfig, seed: int, console: Console | None = None
) -> tuple[ImageData, SplitIndices]:
    """The images `cfg` names and their seeded split (stratified by label when there are
    labels), from the cache when it holds them, else loaded, split and cached."""
    files = _source_files(cfg)
    if files is None:  # not a folder: the loader says what is wrong
        return _load_and_split(cfg, seed)
    try:
        key = storage.cache_key(_keyed(cfg, seed), files)
    except OSError:  # a file that cannot be read: the loader skips or names it, uncached
        return _load_and_split(cfg, seed)
    directory = storage.default_cache_root() / key
    found = _read(directory, key)
    if found is not None:
        return found
    data, split = _load_and_split(cfg, seed)
    try:
        _write(directory, key, data, split)
    except OSError as exc:
        if console is not None:
            console.print(
                f"warning: the prepared images could not be cached in {str(directory)[:120]!r} "
                f"({exc.strerror or exc}); every process of this run loads them again",
                highlight=False,
                markup=False,
            )
    return data, split


def _source_files(cfg: DataConfig) -> list[Path] | None:
    if cfg.source == "digits":
        return []
    root = Path(cfg.source)
    if not root.is_dir():
        return None
    return list_image_files(root)[0]


def _keyed(cfg: DataConfig, seed: int) -> dict[str, Any]:
    folder = cfg.source != "digits"
    return {
        "kind": "images",
        "format_version": FORMAT_VERSION,
        "source": str(Path(cfg.source).resolve()) if folder else "digits",
        "image_size": cfg.image_size if folder else None,
        "channels": cfg.channels if folder else None,
        "on_bad_file": cfg.on_bad_file if folder else None,
        "val_fraction": cfg.val_fraction,
        "test_fraction": cfg.test_fraction,
        "seed": seed,
        # the split is sklearn's train_test_split; the digits ship with scikit-learn
        "scikit-learn": _version("scikit-learn"),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # the loader says how to install it
        return None


def _load_and_split(cfg: DataConfig, seed: int) -> tuple[ImageData, SplitIndices]:
    if cfg.source == "digits":
        data = load_digits_images()
    else:
        data = load_image_folder(cfg.source, cfg.image_size, cfg.channels, cfg.on_bad_file)
    split = split_indices(len(data), data.labels, cfg.val_fraction, cfg.test_fraction, seed=seed)
    return data, split


def _read(directory: Path, key: str) -> tuple[ImageData, SplitIndices] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        manifest = storage.read_manifest(directory)
        if manifest.get("cache_key") != key or manifest.get("kind") != "images":
            return None
        blob = (directory / TENSORS).read_bytes()  # read once: hashed, then parsed
        if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
            return None
        tensors = load(blob)
        names = tuple(manifest["class_names"])
        levels = manifest["levels"]  # pixels stored as integer levels: image = level / levels
        images = tensors["images"]
        data = ImageData(
            images.float() / levels if levels else images,
            tensors.get("labels"),
            names,
            dict(manifest["counts"]),
            tuple(manifest["skipped_files"]),
        )
        split = SplitIndices(*(tensors[name] for name in SPLITS))
    except (CheckpointError, OSError, KeyError, TypeError, ValueError, SafetensorError):
        return None  # damaged or unfinished: built again
    return data, split


def _write(directory: Path, key: str, data: ImageData, split: SplitIndices) -> None:
    from safetensors.torch import save

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    publish(tmp, directory=True)  # mkdtemp makes it private; a cache is shared like a dataset
    try:
        levels, stored = _as_levels(data.images)
        tensors = {"images": stored.contiguous()}
        if data.labels is not None:
            tensors["labels"] = data.labels.contiguous()
        tensors.update({name: getattr(split, name).contiguous() for name in SPLITS})
        blob = save(tensors)  # in memory, as checkpoints are: written and hashed from one copy
        write_durable(tmp / TENSORS, blob)
        manifest = {
            "kind": "images",
            "format_version": FORMAT_VERSION,
            "cache_key": key,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "class_names": list(data.class_names),
            "counts": data.counts,
            "skipped_files": list(data.skipped_files),
            "shape": list(data.images.shape),
            "levels": levels,
        }
        atomic_write_text(tmp / storage.MANIFEST_FILE, json.dumps(manifest, indent=2))
        storage.swap_into_place(tmp, directory, lambda d: _read(d, key) is not None)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _as_levels(images: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(levels, uint8 tensor) when every pixel is exactly `level / levels` as the loaders
    compute it (a folder's 8-bit pixels / 255, the digits' 0..16 / 16): a quarter of the
    float32 bytes on disk and to hash, and the same floats read back. (0, images) otherwise."""
    for levels in (255, 16):
        stored = (images * levels).round().clamp(0, 255).to(torch.uint8)
        if torch.equal(stored.float() / levels, images):
            return levels, stored
    return 0, images
