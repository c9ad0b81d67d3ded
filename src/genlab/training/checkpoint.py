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
import io
import json
import os
import pickle
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model
from safetensors.torch import save as save_safetensors
from torch import nn

from genlab.errors import CheckpointError, first_line
from genlab.fileio import file_sha256, fsync_file, publish, write_durable

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


def write_checkpoint(
    root: Path,
    step: int,
    weights: dict[str, tuple[dict[str, torch.Tensor], dict[str, str] | None]],
    state: dict[str, Any],
    config_yaml: str,
    healthy: bool,
    dirname: str | None = None,
) -> Path:
    """Write checkpoint `step` atomically under `root` (as `step-<step>`, or `dirname`) and
    return its final path. `weights` maps a key to the host tensors (and safetensors metadata)
    of `<key>.safetensors` (checkpoint_writer.stage_weights); `state` holds host tensors only.
    Every file is serialized in memory first and written with plain file writes, so a full disk
    is an OSError with its errno, never a library's message."""
    files = {f"{key}.safetensors": save_safetensors(t, meta) for key, (t, meta) in weights.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files[STATE] = buffer.getvalue()
    files[CONFIG] = config_yaml.encode("utf-8")
    tmp = begin_save(root, step)
    try:
        for name, data in files.items():
            write_durable(tmp / name, data)
        hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        return _seal(tmp, root, step, hashes, healthy, dirname, "consolidated")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def begin_save(root: Path, step: int) -> Path:
    """A fresh temporary directory under `root` that a checkpoint is written into."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{PREFIX}{step}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    return tmp


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
    """Add the training state and config to `tmp` (whose other files, e.g. DCP shards, are
    written), fsync and hash every file, write the manifest last, and rename `tmp` into place
    (removing it on any failure)."""
    try:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_durable(tmp / STATE, buffer.getvalue())
        write_durable(tmp / CONFIG, config_yaml.encode("utf-8"))
        hashes = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            publish(path)  # safetensors writes its files private (0600): the umask's mode
            fsync_file(path)
            hashes[path.relative_to(tmp).as_posix()] = file_sha256(path)
        return _seal(tmp, root, step, hashes, healthy, dirname, fmt)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _seal(
    tmp: Path,
    root: Path,
    step: int,
    hashes: dict[str, str],
    healthy: bool,
    dirname: str | None,
    fmt: str,
) -> Path:
    """Write the manifest last and rename `tmp` into place: the checkpoint exists from here."""
    final = root / (dirname or f"{PREFIX}{step}")
    manifest = {
        "step": step,
        "healthy": healthy,
        "format": fmt,
        "files": dict(sorted(hashes.items())),
        "created": time.time(),
    }
    _write_json_durable(tmp / MANIFEST, manifest)
    if final.exists():  # a stale copy of the same step (e.g. after a rollback): replace
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
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
    """The manifest as written, or None when absent or not JSON (see `check_manifest`)."""
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a complete checkpoint: a JSON object with an integer step (the one in
    the directory's name), a healthy flag, a known format and the hashes of the files it
    needs, each a regular file inside the directory (never a link). A CheckpointError names
    what is wrong otherwise: a damaged or tampered checkpoint is unusable, not a crash."""
    manifest = read_manifest(path)
    if manifest is None:
        raise _unusable(path, "no valid manifest.json")
    step, files = manifest.get("step"), manifest.get("files")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise _unusable(path, f"its manifest's step is {str(step)[:20]!r}, not a step number")
    if path.name.startswith(PREFIX) and path.name != f"{PREFIX}{step}":
        raise _unusable(path, f"its manifest says step {step}")
    if not isinstance(manifest.get("healthy"), bool):
        raise _unusable(path, "its manifest has no healthy flag")
    if manifest.get("format", "consolidated") not in ("consolidated", "sharded", "compressed"):
        raise _unusable(path, f"unknown format {str(manifest.get('format'))[:20]!r}")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise _unusable(path, "its manifest lists no files with hashes")
    needed = [STATE, CONFIG]
    if is_sharded(manifest):
        needed.append("sharded/.metadata")
    elif not any(name.endswith(".safetensors") for name in files):
        needed.append(WEIGHTS)
    missing = [name for name in needed if name not in files]
    if missing:
        raise _unusable(path, f"its manifest does not list {missing[0]}")
    root = path.resolve()
    for name in files:
        file = path / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise _unusable(path, f"its manifest names a file outside it ({name[:40]!r})")
        if file.is_symlink() or not file.is_file() or root not in file.resolve().parents:
            raise _unusable(path, f"{name[:40]} is missing or not a plain file")
    return manifest


def verify_checkpoint(path: Path) -> CheckpointInfo:
    """`check_manifest` plus every file's sha256 against the manifest: the checks every load
    makes before it reads a byte of weights or state."""
    manifest = check_manifest(path)
    _check_hashes(path, manifest)
    return CheckpointInfo(path, manifest["step"], manifest["healthy"])


def _check_hashes(path: Path, manifest: dict[str, Any]) -> None:
    for name, digest in manifest["files"].items():
        if file_sha256(path / name) != digest:
            raise _unusable(path, f"{name} does not match its hash (changed or damaged)")


def _unusable(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(path)!r} is unusable: {why}; use another checkpoint of the run, or "
        "train again"
    )


def scan(root: Path, verify: bool = False) -> list[tuple[Path, CheckpointInfo | CheckpointError]]:
    """Every `step-N` directory under `root`, oldest first by N, with its CheckpointInfo or
    the CheckpointError that makes it unusable (with `verify`, hashes are checked too)."""
    found: list[tuple[int, Path, CheckpointInfo | CheckpointError]] = []
    if not root.is_dir():
        return []
    for p in root.iterdir():
        number = p.name.removeprefix(PREFIX)
        if not (p.name.startswith(PREFIX) and number.isdigit() and p.is_dir()):
            continue
        try:
            if p.is_symlink():
                raise _unusable(p, "it is a link, not a directory genlab wrote")
            manifest = check_manifest(p)
            if verify:
                _check_hashes(p, manifest)
            result: CheckpointInfo | CheckpointError = CheckpointInfo(
                p, manifest["step"], manifest["healthy"]
            )
        except CheckpointError as exc:
            result = exc
        found.append((int(number), p, result))
    return [(p, r) for _, p, r in sorted(found, key=lambda t: t[0])]


def list_checkpoints(root: Path, verify: bool = False) -> list[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest first. Half-written, damaged and incomplete
    ones are left out; with `verify`, so are ones whose files no longer match their hashes."""
    return [r for _, r in scan(root, verify) if isinstance(r, CheckpointInfo)]


def first_usable(
    preference: list[tuple[Path, CheckpointInfo | CheckpointError]],
) -> tuple[CheckpointInfo | None, list[str]]:
    """The first checkpoint of `preference` that `probe` accepts, and why each one before it
    was passed over (one line each, for a warning)."""
    skipped: list[str] = []
    for _, result in preference:
        if isinstance(result, CheckpointError):
            skipped.append(str(result))
            continue
        try:
            return probe(result.path), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    return None, skipped


def latest(root: Path, healthy_only: bool = False) -> CheckpointInfo | None:
    candidates = [c for c in list_checkpoints(root, verify=True) if c.healthy or not healthy_only]
    return candidates[-1] if candidates else None


def probe(path: Path) -> CheckpointInfo:
    """Verify a checkpoint and parse what loading it will parse (the training state and each
    weight file's header), without touching any model: a checkpoint that passes can be
    loaded; one that does not raises a CheckpointError before anything changed."""
    manifest = check_manifest(path)
    _check_hashes(path, manifest)
    load_state(path)
    for name in manifest["files"]:
        if name.endswith(".safetensors"):
            _read_safetensors(path / name, lambda f: f.keys())
    return CheckpointInfo(path, manifest["step"], manifest["healthy"])


def load_checkpoint(path: Path, modules: dict[str, nn.Module] | nn.Module) -> dict[str, Any]:
    """Verify, then load weights into plain (unsharded) `modules` (or one `model`) from either
    format, and return the training state (weights-only unpickling: a checkpoint can never
    run code)."""
    if isinstance(modules, nn.Module):
        modules = {"model": modules}
    manifest = check_manifest(path)
    _check_hashes(path, manifest)
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
        file = weights_file(path, key)
        try:
            missing, unexpected = load_model(module, str(file), strict=False)
        except RuntimeError as exc:  # shapes that differ: another architecture
            raise misfit(path, exc) from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise _unusable(path, f"{file.name} cannot be read ({first_line(exc)[:80]})") from None
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
    """The training state of a checkpoint. Weights-only unpickling: a state file holding
    anything but tensors and plain data is refused, never executed."""
    try:
        with warnings.catch_warnings():  # the unpickler's own notes are not for the user
            warnings.simplefilter("ignore")
            state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        kind = type(exc).__name__
        raise _unusable(path, f"{STATE} is not a genlab training state ({kind})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise _unusable(path, f"{STATE} does not hold a training state")
    return state


def _read_safetensors(file: Path, read: Any) -> Any:
    try:
        with safe_open(str(file), framework="pt") as f:
            return read(f)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        why = f"{file.name} cannot be read ({first_line(exc)[:80]})"
        raise _unusable(file.parent, why) from None


def prune(root: Path, keep: int) -> None:
    """Keep the `keep` newest checkpoints plus the newest healthy one; remove leftovers of
    interrupted saves (other processes' temporary directories: this one's may be a save
    still being written in the background)."""
    ckpts = list_checkpoints(root)
    healthy = [c for c in ckpts if c.healthy]
    keep_paths = {c.path for c in ckpts[-keep:]}
    if healthy:
        keep_paths.add(healthy[-1].path)
    for c in ckpts:
        if c.path not in keep_paths:
            shutil.rmtree(c.path, ignore_errors=True)
    for p in root.glob(f".tmp-{PREFIX}*"):
        if p.name.split("-")[3:4] != [str(os.getpid())]:  # .tmp-step-<N>-<pid>-<ns>
            shutil.rmtree(p, ignore_errors=True)


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
