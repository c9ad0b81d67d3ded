"""Image data: the bundled scikit-learn digits, a folder of PNG/JPEG files and a seeded split.

Every source returns an `ImageData` whose images are float tensors (N, C, H, W) in [0, 1]
(pixel units). Scaling to the model's range (`data/scale.py`) and augmentation
(`data/augment.py`, train batches only) happen later, in `training/image_tasks.ImageBatches`.

Folder layout: either images directly in the folder (no labels), or one sub-folder per class
(labels are the sorted folder names). Unreadable files are skipped and counted (or, with
`on_bad_file="error"`, raise a DataError naming the file) — a bad file never stops a load
half-way with a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from genlab.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; compare fields yourself
class ImageData:
    """A set of images with optional integer labels.

    images: (N, C, H, W) float32 in [0, 1]. labels: (N,) int64, or None when unlabeled.
    class_names[i] names label i. counts: {"found", "loaded", "skipped"} file counts.
    skipped_files: the paths that could not be read (for the run's log).
    """

    images: Tensor
    labels: Tensor | None
    class_names: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    skipped_files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W), what the model builders take."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))


def load_digits_images() -> ImageData:
    """scikit-learn's bundled 8x8 digits: 1,797 images (N, 1, 8, 8), labels 0-9. No download.

    The raw pixels are integers in [0, 16]; they are divided by 16 to land in [0, 1].
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    labels = torch.tensor(bunch.target, dtype=torch.int64)  # (N,)
    n = int(images.shape[0])
    names = tuple(str(c) for c in range(10))
    return ImageData(images, labels, names, {"found": n, "loaded": n, "skipped": 0})


def load_image_folder(
    path: str | Path,
    image_size: int | tuple[int, int],
    channels: int = 3,
    on_bad_file: Literal["skip", "error"] = "skip",
) -> ImageData:
    """Load every PNG/JPEG under `path`, resized to `image_size` (H, W; an int means square).

    Images are converted to grayscale (channels=1) or RGB (channels=3) and resized without
    keeping the aspect ratio. Sub-folders make labelled data (one class per sub-folder).
    """
    root = Path(path)
    height, width = _check_image_args(image_size, channels, on_bad_file)
    if not root.is_dir():
        raise DataError(
            f"image folder not found: '{root}' is not a directory; "
            "set data.path to a folder of PNG/JPEG files (or one sub-folder per class)"
        )

    # Decide the layout before reading a single file, so a bad layout fails up front.
    files, labels, class_names = list_image_files(root)
    if not files:
        raise DataError(
            f"no PNG/JPEG files found in '{root}' (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "put the images in that folder or in one sub-folder per class"
        )

    arrays: list[np.ndarray] = []
    kept_labels: list[int] = []
    skipped: list[str] = []
    for file, label in zip(files, labels):
        array = _read_image(file, height, width, channels)
        if array is None:
            if on_bad_file == "error":
                raise DataError(
                    f"cannot read image file '{file}' (corrupt or not an image); remove it "
                    "or set on_bad_file='skip' to skip unreadable files"
                )
            skipped.append(str(file))
            continue
        arrays.append(array)
        kept_labels.append(label)

    if not arrays:
        raise DataError(
            f"none of the {len(files)} image files in '{root}' could be read "
            f"(first: '{skipped[0]}'); check that they are valid PNG/JPEG files"
        )
    # (N, H, W, C) uint8 -> (N, C, H, W) float in [0, 1]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    label_tensor = torch.tensor(kept_labels, dtype=torch.int64) if class_names else None
    counts = {"found": len(files), "loaded": len(arrays), "skipped": len(skipped)}
    return ImageData(images.contiguous(), label_tensor, class_names, counts, tuple(skipped))


def read_image_files(
    files: list[Path], image_size: int | tuple[int, int], channels: int
) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] from these PNG/JPEG files, resized as an image folder is
    (genlab predict); an unreadable file is a DataError naming it."""
    height, width = _check_image_args(image_size, channels, "error")
    arrays = []
    for file in files:
        array = _read_image(file, height, width, channels)
        if array is None:
            raise DataError(
                f"cannot read image file '{file}' (corrupt or not an image); remove it or "
                "convert it to PNG/JPEG"
            )
        arrays.append(array)
    if not arrays:
        raise DataError("no image files to read; pass a PNG/JPEG file or a folder of them")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def _check_image_args(
    image_size: int | tuple[int, int], channels: int, on_bad_file: str
) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
        raise ConfigError(
            f"image_size must be a positive int or (height, width), got {image_size!r}; "
            "set e.g. image_size: 32"
        )
    if channels not in (1, 3):
        raise ConfigError(
            f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}; set channels: 1 or 3"
        )
    if on_bad_file not in ("skip", "error"):
        raise ConfigError(
            f"on_bad_file must be 'skip' or 'error', got {on_bad_file!r}; set on_bad_file: skip"
        )
    return int(size[0]), int(size[1])


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def list_image_files(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Files in a stable (sorted) order, their labels (-1 if unlabeled) and the class names."""
    top_files = sorted(p for p in root.iterdir() if _is_image(p))
    class_dirs = sorted(
        d for d in root.iterdir() if d.is_dir() and any(_is_image(p) for p in d.rglob("*"))
    )
    if not class_dirs:
        return top_files, [-1] * len(top_files), ()
    if top_files:
        raise DataError(
            f"'{root}' mixes {len(top_files)} loose image files (e.g. '{top_files[0].name}') "
            f"with class sub-folders ({', '.join(d.name for d in class_dirs[:3])}); move the "
            "loose files into a class sub-folder or remove the sub-folders"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, directory in enumerate(class_dirs):
        members = sorted(p for p in directory.rglob("*") if _is_image(p))
        files += members
        labels += [label] * len(members)
    return files, labels, tuple(d.name for d in class_dirs)


def _read_image(file: Path, height: int, width: int, channels: int) -> np.ndarray | None:
    """(H, W, C) uint8, or None when Pillow cannot decode the file."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            img.load()  # decode now: truncated files fail here, not later
            mode = "L" if channels == 1 else "RGB"
            img = img.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # OSError covers UnidentifiedImageError and truncated data; SyntaxError is what
        # some Pillow plugins raise on malformed headers.
        return None
    return array.reshape(height, width, channels)


# ----------------------------------------------------------------------------- splitting


@dataclass(frozen=True, eq=False)
class SplitIndices:
    """Index tensors (int64, sorted) into an ImageData for each split."""

    train: Tensor
    val: Tensor
    test: Tensor


def split_indices(
    n: int,
    labels: Tensor | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
) -> SplitIndices:
    """Seeded train/val/test split by index; stratified by label when labels are given.

    The test part is taken first, then val from the rest, so changing val_fraction never
    moves an example into or out of the test set.
    """
    from sklearn.model_selection import train_test_split

    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {frac}; set e.g. {name}: 0.1")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction must be < 1 so that training data is left, got "
            f"{val_fraction} + {test_fraction}; lower one of them"
        )
    if labels is not None and len(labels) != n:
        raise DataError(f"got {len(labels)} labels for {n} images; they must match")

    index = np.arange(n)
    y = labels.numpy() if (labels is not None and stratify) else None

    def take(idx: np.ndarray, y_part: np.ndarray | None, frac: float, what: str):
        if frac == 0.0:
            return idx, np.array([], dtype=np.int64), y_part
        try:
            rest, part = train_test_split(
                idx, test_size=frac, random_state=seed, stratify=y_part, shuffle=True
            )
        except ValueError as exc:
            raise DataError(
                f"cannot split {len(idx)} images into a {what} part of {frac:.3f} "
                f"({exc}); use more images, a larger {what}_fraction, or stratify: false"
            ) from None
        y_rest = None if y_part is None else y[rest]
        return rest, part, y_rest

    rest, test, y_rest = take(index, y, test_fraction, "test")
    train, val, _ = take(rest, y_rest, val_fraction / (1.0 - test_fraction), "val")

    def as_tensor(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.sort(a).astype(np.int64))

    return SplitIndices(as_tensor(train), as_tensor(val), as_tensor(test))
