"""A small CNN feature network that genlab trains itself on real training images.

FID/KID/precision-recall need a fixed feature extractor. The standard one (Inception v3 on
ImageNet) would have to be downloaded, and it knows nothing about 8x8 digits or 28x28
sketches. Instead genlab trains a small classifier on the real training images once, caches
its weights as safetensors under a hash of the training data and hyperparameters, and uses
its penultimate layer as features and its softmax as class probabilities. Its name and the
sha256 of its weight file go into metrics.json, so scores are only compared when computed
with the very same network.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genlab.errors import CheckpointError, ConfigError, DataError, first_line
from genlab.fileio import file_sha256, publish

__all__ = ["FeatureClassifier", "SmallCNN", "digits_dataset", "load_or_train_feature_classifier"]

_FORMAT_VERSION = "1"  # bump when the architecture or training recipe changes


class SmallCNN(nn.Module):
    """conv-conv-pool-conv-pool, then a `feature_dim` layer (the features) and a classifier.
    Adaptive pooling makes it accept any image size >= 4x4."""

    def __init__(self, in_channels: int, num_classes: int, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),  # (N, 64, 2, 2) whatever the input size
            nn.Flatten(),
            nn.Linear(64 * 4, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (N, num_classes) logits


@dataclass
class FeatureClassifier:
    """A trained SmallCNN plus what identifies it.

    name: human-readable id; content_hash: sha256 of the saved safetensors file;
    test_accuracy: accuracy on the held-out test split; from_cache: True when the weights were
    loaded rather than trained by this call; path: the weights file."""

    net: SmallCNN
    name: str
    content_hash: str
    test_accuracy: float
    from_cache: bool
    path: Path
    in_channels: int
    num_classes: int

    @torch.no_grad()
    def _run(self, x: torch.Tensor, fn, batch_size: int) -> torch.Tensor:
        x = _check_images(x, "images", self.in_channels)
        self.net.eval()
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])

    def features(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] -> (N, D) float32 features."""
        return self._run(x, self.net.features, batch_size)

    def probs(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] -> (N, num_classes) class probabilities."""
        return self._run(x, lambda b: self.net(b).softmax(dim=-1), batch_size)


def _check_images(x, name: str, channels: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 4 or (channels is not None and t.shape[1] != channels):
        want = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise DataError(
            f"{name} must be a {want} image tensor, got shape {tuple(t.shape)}; "
            f"add the channel axis / use the image shape the classifier was trained on"
        )
    t = t.detach().to("cpu", torch.float32)
    lo, hi = (float(t.min()), float(t.max())) if t.numel() else (0.0, 0.0)
    if t.shape[0] == 0 or lo < -1e-6 or hi > 1 + 1e-6:
        raise DataError(
            f"{name} must be a non-empty float image batch with values in [0, 1], got "
            f"{t.shape[0]} images with values from {lo:.4g} to {hi:.4g}; rescale (e.g. / 255)"
        )
    return t


def _check_labels(y, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(y).to("cpu")
    if t.dim() != 1 or t.shape[0] != n or t.is_floating_point() or (n and int(t.min()) < 0):
        raise DataError(
            f"{name} must be {n} non-negative integer class ids (one per image), got shape "
            f"{tuple(t.shape)} dtype {t.dtype}; encode classes as 0..C-1"
        )
    return t.long()


def digits_dataset(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (ships with sklearn, no download) as (N, 1, 8, 8) float in
    [0, 1], split into train/test with a seeded, stratified shuffle:
    (train_images, train_labels, test_images, test_labels)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0  # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return (
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_te),
        torch.from_numpy(y_te),
    )


def _cache_key(tensors: list[torch.Tensor], hparams: dict) -> str:
    """sha256 over the training/test data (shape, dtype, bytes) and the hyperparameters:
    the same data and settings always map to the same cache file."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": _FORMAT_VERSION, **hparams}, sort_keys=True).encode())
    for t in tensors:
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return float((net(x).argmax(dim=1) == y).double().mean())


@contextmanager
def _one_thread():
    """Run on one intra-op thread, then restore the caller's setting. The ops here are tiny
    (batches of 64 small images), so extra threads only add synchronisation; on a busy
    2-core machine two threads made training ~7x slower (20 s instead of 3 s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(net, x, y, *, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((x.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()


def load_or_train_feature_classifier(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    cache_dir: Path,
    seed: int = 0,
    epochs: int = 15,
    *,
    batch_size: int = 64,
    lr: float = 3e-3,
    feature_dim: int = 64,
) -> FeatureClassifier:
    """Return the feature classifier for this training data, training it only once.

    Images are (N, C, H, W) float in [0, 1]; labels (N,) integer class ids. Weights are
    cached as `<cache_dir>/feature-cnn-<key>.safetensors`, key = sha256 of the data and the
    hyperparameters; a later call with the same inputs loads that file (safetensors only, no
    pickle) instead of training. Training is seeded and leaves the global RNG untouched.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0 or feature_dim < 1:
        raise ConfigError(
            f"feature classifier needs epochs >= 1, batch_size >= 1, lr > 0, feature_dim >= 1, "
            f"got epochs={epochs}, batch_size={batch_size}, lr={lr}, feature_dim={feature_dim}; "
            f"the defaults are 15, 64, 3e-3, 64"
        )
    x_tr = _check_images(train_images, "train_images")
    x_te = _check_images(test_images, "test_images", x_tr.shape[1])
    y_tr = _check_labels(train_labels, x_tr.shape[0], "train_labels")
    y_te = _check_labels(test_labels, x_te.shape[0], "test_labels")
    num_classes = int(max(int(y_tr.max()), int(y_te.max()))) + 1
    in_channels = x_tr.shape[1]
    hparams = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "feature_dim": feature_dim,
        "num_classes": num_classes,
    }
    key = _cache_key([x_tr, y_tr, x_te, y_te], hparams)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"feature-cnn-{key[:16]}.safetensors"
    name = f"genlab-small-cnn-d{feature_dim}-{key[:8]}"
    # fork_rng: weight init draws from the global RNG; seed it without disturbing the caller's.
    # (Training itself uses its own generator, and the net has no dropout.)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallCNN(in_channels, num_classes, feature_dim)

    if path.exists():
        try:
            net.load_state_dict(load_file(path))
        except Exception as exc:  # corrupt or from another architecture version
            raise CheckpointError(
                f"cached feature classifier {path} cannot be loaded ({first_line(exc)}); "
                f"delete the file and it will be retrained"
            ) from exc
        from_cache = True
    else:
        with _one_thread():
            _train(net, x_tr, y_tr, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        metadata = {
            "format_version": _FORMAT_VERSION,
            "cache_key": key,
            "hparams": json.dumps(hparams, sort_keys=True),
        }
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp), metadata=metadata)
        publish(tmp)  # safetensors writes 0600; the user's umask decides
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache file
        from_cache = False

    return FeatureClassifier(
        net=net.eval(),
        name=name,
        content_hash=file_sha256(path),
        test_accuracy=_accuracy(net, x_te, y_te),
        from_cache=from_cache,
        path=path,
        in_channels=in_channels,
        num_classes=num_classes,
    )
