"""Checkpoints: `checkpoints/step-<N>/` holding weights as safetensors (one file per module:
`model.safetensors`, or `generator.safetensors` + `discriminator.safetensors`), the training state
(optimizer, RNG, data position, guard state) as a weights-only torch file, the config, and
`manifest.json` (file hashes, step, healthy flag, format) written last. A *sharded* checkpoint
(`train.checkpoint_format=sharded`) keeps weights and optimizer state in `sharded/`, a
torch.distributed.checkpoint directory with one file per rank (sharded_checkpoint.py).

A save goes to a temporary sibling directory, every file is fsynced, the manifest is written,
and only then is the directory renamed into place, so a crash (even `kill -9`) mid-save leaves
either the complete checkpoint or nothing: a directory without a valid manifest is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_file, save_model
from torch import nn

from genlab.errors import CheckpointError, first_line

WEIGHTS = "model.safetensors"  # the main module's file
STATE = "state.pt"
CONFIG = "config.yaml"
MANIFEST = "manifest.json"
PREFIX = "step-"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    healthy: bool


def save_checkpoint(
    root: Path,
    step: int,
    modules: dict[str, nn.Module] | dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    config_yaml: str,
    healthy: bool,
    dirname: str | None = None,
) -> Path:
    """Write checkpoint `step` atomically under `root` (as `step-<step>`, or `dirname`) and
    return its final path. `modules` maps a key to a module or to its (full) state dict."""
    tmp = begin_save(root, step)
    try:
        write_weights(tmp, modules)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return finish_save(tmp, root, step, state, config_yaml, healthy, dirname)


def begin_save(root: Path, step: int) -> Path:
    """A fresh temporary directory under `root` that a checkpoint is written into."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{PREFIX}{step}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    return tmp


def write_weights(
    tmp: Path, modules: dict[str, nn.Module] | dict[str, dict[str, torch.Tensor]]
) -> None:
    """`<key>.safetensors` for each module (or full state dict) in `modules`."""
    for key, module in modules.items():
        if isinstance(module, nn.Module):
            # save_model handles tied (shared) tensors, which plain save_file refuses.
            save_model(module, str(tmp / f"{key}.safetensors"))
        else:
            save_file(module, str(tmp / f"{key}.safetensors"))


def finish_save(
    tmp: Path,
    root: Path,
    step: int,
    state: dict[str, Any],
    config_yaml: str,
    healthy: bool,
    dirname: str | None = None,
    fmt: str = "consolidated",
) -> Path:
    """Add the training state and config to `tmp`, fsync and hash every file, write the
    manifest last, and rename `tmp` into place (removing it on any failure)."""
    final = root / (dirname or f"{PREFIX}{step}")
    try:
        torch.save(state, tmp / STATE)
        (tmp / CONFIG).write_text(config_yaml, encoding="utf-8")
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            name = path.relative_to(tmp).as_posix()
            _fsync(path)
            files[name] = _sha256(path)
        manifest = {
            "step": step,
            "healthy": healthy,
            "format": fmt,
            "files": files,
            "created": time.time(),
        }
        _write_json_durable(tmp / MANIFEST, manifest)
        if final.exists():  # a stale copy of the same step (e.g. after a rollback): replace
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def mark_healthy(path: Path) -> None:
    """Flip the manifest's healthy flag (atomic replace of manifest.json)."""
    manifest = read_manifest(path)
    if manifest is None:
        return
    manifest["healthy"] = True
    tmp = path / (MANIFEST + ".tmp")
    _write_json_durable(tmp, manifest)
    os.replace(tmp, path / MANIFEST)


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def list_checkpoints(root: Path, verify: bool = False) -> list[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest first. Half-written ones are ignored;
    with `verify`, so are ones whose files no longer match the manifest's hashes."""
    found = []
    if not root.is_dir():
        return found
    for p in root.iterdir():
        if not (p.is_dir() and p.name.startswith(PREFIX)):
            continue
        manifest = read_manifest(p)
        if manifest is None or not all((p / f).is_file() for f in manifest.get("files", {})):
            continue
        if verify and not _hashes_match(p, manifest):
            continue
        found.append(CheckpointInfo(p, int(manifest["step"]), bool(manifest["healthy"])))
    return sorted(found, key=lambda c: c.step)


def latest(root: Path, healthy_only: bool = False) -> CheckpointInfo | None:
    candidates = [c for c in list_checkpoints(root, verify=True) if c.healthy or not healthy_only]
    return candidates[-1] if candidates else None


def load_checkpoint(path: Path, modules: dict[str, nn.Module] | nn.Module) -> dict[str, Any]:
    """Load weights into plain (unsharded) `modules` (or one `model`) from either format, and
    return the training state (weights-only unpickling: a checkpoint can never run code)."""
    if isinstance(modules, nn.Module):
        modules = {"model": modules}
    manifest = require_manifest(path)
    if manifest.get("format") == "compressed":  # genlab compress: reshaped, quantized layers
        from genlab.compression.storage import load_compressed

        load_compressed(path, modules)
        return load_state(path)
    if is_sharded(manifest):
        from genlab.training.sharded_checkpoint import load_sharded

        load_sharded(path, modules)
        return load_state(path)
    load_weights(path, modules)
    return load_state(path)


def load_weights(path: Path, modules: dict[str, nn.Module]) -> None:
    """Load a consolidated checkpoint's `<key>.safetensors` into each plain module."""
    for key, module in modules.items():
        missing, unexpected = load_model(module, str(weights_file(path, key)), strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit the model: missing "
                f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}; resume with the "
                "config it was trained with"
            )


def misfit(path: Path, exc: BaseException) -> CheckpointError:
    """The error for a checkpoint whose tensors do not fit the model being loaded."""
    return CheckpointError(
        f"checkpoint {str(path)!r} does not fit the model ({first_line(exc)[:200]}); resume "
        "with the config it was trained with"
    )


def require_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a complete checkpoint, or a clear error for anything else."""
    manifest = read_manifest(path)
    if manifest is None:
        raise CheckpointError(
            f"{str(path)!r} is not a complete checkpoint (no valid manifest.json); "
            "use a checkpoints/step-N directory written by genlab"
        )
    return manifest


def is_sharded(manifest: dict[str, Any]) -> bool:
    return manifest.get("format") == "sharded"


def weights_file(path: Path, key: str) -> Path:
    """`<key>.safetensors` of a consolidated checkpoint, or a clear error if it is absent."""
    file = path / f"{key}.safetensors"
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no {file.name}; it was written for another "
            "model family or settings — resume with the config it was trained with"
        )
    return file


def load_state(path: Path) -> dict[str, Any]:
    """The training state of a checkpoint (weights-only unpickling)."""
    return torch.load(path / STATE, map_location="cpu", weights_only=True)


def prune(root: Path, keep: int) -> None:
    """Keep the `keep` newest checkpoints plus the newest healthy one; remove leftovers of
    interrupted saves."""
    ckpts = list_checkpoints(root)
    healthy = [c for c in ckpts if c.healthy]
    keep_paths = {c.path for c in ckpts[-keep:]}
    if healthy:
        keep_paths.add(healthy[-1].path)
    for c in ckpts:
        if c.path not in keep_paths:
            shutil.rmtree(c.path, ignore_errors=True)
    for p in root.glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def _hashes_match(path: Path, manifest: dict[str, Any]) -> bool:
    return all(_sha256(path / name) == digest for name, digest in manifest["files"].items())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_durable(path: Path, obj: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
