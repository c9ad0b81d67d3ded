"""Checkpoints: `checkpoints/step-<N>/` holding weights as safetensors (one file per module:
`model.safetensors`, or `generator.safetensors` + `discriminator.safetensors`), the training state
(optimizer, RNG, data position, guard state) as a weights-only torch file, the config, and
`manifest.json` (file hashes, step, healthy flag) written last.

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
from safetensors.torch import load_model, save_model
from torch import nn

from genlab.errors import CheckpointError

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
    modules: dict[str, nn.Module],
    state: dict[str, Any],
    config_yaml: str,
    healthy: bool,
    dirname: str | None = None,
) -> Path:
    """Write checkpoint `step` atomically under `root` (as `step-<step>`, or `dirname`) and
    return its final path."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / (dirname or f"{PREFIX}{step}")
    tmp = root / f".tmp-{PREFIX}{step}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        names = []
        for key, module in modules.items():
            # save_model handles tied (shared) tensors, which plain save_file refuses.
            save_model(module, str(tmp / f"{key}.safetensors"))
            names.append(f"{key}.safetensors")
        torch.save(state, tmp / STATE)
        (tmp / CONFIG).write_text(config_yaml, encoding="utf-8")
        files = {}
        for name in (*names, STATE, CONFIG):
            _fsync(tmp / name)
            files[name] = _sha256(tmp / name)
        manifest = {"step": step, "healthy": healthy, "files": files, "created": time.time()}
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
    """Load weights into `modules` (or one `model`) and return the training state
    (weights-only unpickling: a checkpoint can never run code)."""
    if isinstance(modules, nn.Module):
        modules = {"model": modules}
    manifest = read_manifest(path)
    if manifest is None:
        raise CheckpointError(
            f"{str(path)!r} is not a complete checkpoint (no valid manifest.json); "
            "use a checkpoints/step-N directory written by genlab"
        )
    for key, module in modules.items():
        file = path / f"{key}.safetensors"
        if not file.is_file():
            raise CheckpointError(
                f"checkpoint {str(path)!r} has no {file.name}; it was written for another "
                "model family or settings — resume with the config it was trained with"
            )
        missing, unexpected = load_model(module, str(file), strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit the model: missing "
                f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}; resume with the "
                "config it was trained with"
            )
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
