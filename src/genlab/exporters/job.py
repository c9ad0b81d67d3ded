"""One export, start to finish: validate the request, pick the run's checkpoint, let the format
check that it can hold the model (before anything is written), write into a staging directory
next to the target, record `export.json`, and only then rename the staging directory into place.

A failure at any point (bad input, a missing dependency, a crash) removes the staging directory
and any parent directories it had to create: the target is either the complete export or as it
was before. `--overwrite` replaces a non-empty target only after the new export is complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genlab.errors import ConfigError, RunDirError
from genlab.fileio import require_writable
from genlab.safe_yaml import short

if TYPE_CHECKING:
    from rich.console import Console
    from torch import nn

    from genlab.config import ExperimentConfig
    from genlab.evaluation.run import LoadedRun
    from genlab.track.rundir import RunDir
    from genlab.training.checkpoint import CheckpointInfo

EXPORT_RECORD = "export.json"
GGUF_TYPES = ("f32", "f16", "q8_0")
DEFAULT_GGUF_TYPE = "f16"


@dataclass(frozen=True)
class ExportOptions:
    format: str
    adapter: bool = False  # hf, LoRA runs: the adapter alone instead of merged weights
    gguf_type: str | None = None  # gguf: f32 | f16 | q8_0


@dataclass(frozen=True)
class Exporter:
    """One format: the model families it holds, a `check` that raises a GenlabError for a run
    it cannot hold (and writes nothing), and `write(job, out)` that writes its files into the
    staging directory `out` and returns the record's format-specific part (`parity`, ...)."""

    families: tuple[str, ...]
    check: Callable[[ExportJob], None]
    write: Callable[[ExportJob, Path], dict[str, Any]]
    tasks: tuple[str, ...] = ("generate",)  # config `task`s it holds (classify: onnx only)


@dataclass
class ExportJob:
    """What an exporter works from: the run, its config, the chosen checkpoint, the options."""

    run: RunDir
    cfg: ExperimentConfig
    checkpoint: CheckpointInfo
    options: ExportOptions
    target: Path  # where the export will be once complete (files are written elsewhere first)
    say: Callable[[str], None] = lambda _: None
    notes: list[str] = field(default_factory=list)  # caveats for export.json and the card
    _loaded: LoadedRun | None = None

    @property
    def family(self) -> str:
        return self.cfg.model.family

    @property
    def is_lora(self) -> bool:
        return self.cfg.finetune.init_from is not None and self.cfg.finetune.method == "lora"

    def lm(self) -> LoadedRun:
        """The run's language model (EMA weights when kept) and tokenizer, on the CPU."""
        if self._loaded is None:
            from genlab.evaluation.run import load_run_model

            self._loaded = load_run_model(self.run.root, self.checkpoint.path, device="cpu")
        return self._loaded

    def exportable(self, model: nn.Module) -> nn.Module:
        """The model a format writes: for a LoRA run a copy with the adapters merged in (the
        run's model stays the parity reference), noted in the record; else `model` itself."""
        if not self.is_lora:
            return model
        self.notes.append("LoRA adapter merged into the weights.")
        return merged_copy(model)

    def describe_checkpoint(self) -> dict[str, Any]:
        path = self.checkpoint.path
        ema = (path / "ema.safetensors").is_file() or (path / "generator_ema.safetensors").is_file()
        try:
            shown = str(path.relative_to(self.run.root))
        except ValueError:
            shown = str(path)
        return {"path": shown, "step": self.checkpoint.step, "ema_weights": ema}


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what export.json says about it."""

    path: Path
    record: dict[str, Any]

    @property
    def parity_ok(self) -> bool:
        return bool(self.record.get("parity", {}).get("ok", False))


def merged_copy(model: nn.Module) -> nn.Module:
    """A copy of a LoRA-adapted `model` with its adapters folded into the weights."""
    import copy

    from genlab.finetune import merge_lora

    return merge_lora(copy.deepcopy(model))


def export_run(
    run_dir: str | Path,
    format: str,
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    *,
    adapter: bool = False,
    gguf_type: str | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> ExportResult:
    """Export a run for use outside genlab: `format` "hf" (a transformers directory), "onnx"
    (ONNX Runtime) or "gguf" (llama.cpp; `gguf_type` f32, f16 or q8_0). Writes into `out`
    (default RUN_DIR/export/<format>) atomically, with export.json holding the files' sha256
    and the parity measured against the genlab model; `checkpoint`: a checkpoints/step-N
    directory (default: the last). `adapter`: a LoRA run's adapter alone (hf). A non-empty
    `out` is refused unless `overwrite`. Bad input raises a GenlabError before anything is
    written; the returned ExportResult holds the path and the export.json record."""
    from genlab.exporters import EXPORTERS

    # Checks of the request itself first: they need nothing heavy imported.
    if not isinstance(format, str) or format not in EXPORTERS.targets():
        EXPORTERS.lookup(format, where="--format")  # the one-line "unknown ..." error
    options = _options(format, adapter, gguf_type)
    from genlab import config as config_mod
    from genlab.track.rundir import open_existing

    run = open_existing(Path(run_dir))
    cfg = config_mod.load(run.config)
    target = Path(out) if out is not None else run.root / "export" / format
    _check_target(target, run.root, overwrite)
    exporter: Exporter = EXPORTERS[format]  # imports the format's module (and torch)
    family = cfg.model.family
    if family not in exporter.families:
        fits = [name for name in EXPORTERS if family in EXPORTERS[name].families]
        raise ConfigError(
            f"--format {format} does not hold model.family {family!r} runs; for this run use "
            f"--format {' or '.join(fits)}"
        )
    if cfg.task not in exporter.tasks:
        fits = [name for name in EXPORTERS if cfg.task in EXPORTERS[name].tasks]
        raise ConfigError(
            f"--format {format} holds language models and image generators, not a task "
            f"{cfg.task!r} run; export this run with --format {' or '.join(fits)}"
        )
    from genlab.evaluation.run import pick_checkpoint  # imports torch: after the cheap checks

    info = pick_checkpoint(run, checkpoint)
    _check_compressed(run.root, cfg, info.path, format)
    say = console.print if console is not None else (lambda *_: None)
    job = ExportJob(run, cfg, info, options, target, say)
    exporter.check(job)
    say(f"exporting {run.root} (step {info.step}) as {format} → {target}")
    try:
        with _staging(target, overwrite) as work:
            part = exporter.write(job, work)
            record = _record(job, work, part)
            text = json.dumps(record, indent=2) + "\n"
            (work / EXPORT_RECORD).write_text(text, encoding="utf-8")
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise RunDirError(
            f"no space left on the device while writing the export to {str(target)!r} "
            "(nothing was kept); free some space or pass --out on another disk"
        ) from None
    missed = [n for n, g in record.get("parity", {}).get("goals", {}).items() if not g["met"]]
    if missed:
        say(f"[yellow]warning[/]: parity goals not met: {', '.join(missed)} (see {EXPORT_RECORD})")
    return ExportResult(target, record)


def _options(format: str, adapter: bool, gguf_type: str | None) -> ExportOptions:
    if gguf_type is not None and format != "gguf":
        raise ConfigError(f"--gguf-type applies to --format gguf, not {format!r}; drop it")
    if format == "gguf":
        gguf_type = (gguf_type or DEFAULT_GGUF_TYPE).lower()
        if gguf_type not in GGUF_TYPES:
            raise ConfigError(
                f"--gguf-type must be one of {', '.join(GGUF_TYPES)}, got {gguf_type[:20]!r}; "
                "f16 is the usual choice, q8_0 the smaller one"
            )
    if adapter and format != "hf":
        raise ConfigError(
            f"--adapter exports a LoRA adapter in PEFT's format, which is --format hf; "
            f"drop --adapter to export merged weights as {format}"
        )
    return ExportOptions(format, adapter, gguf_type)


def _check_compressed(root: Path, cfg: Any, checkpoint: Path, format: str) -> None:
    """A compressed run (genlab compress) exports only when its weights are plain tensors of
    the original shapes (unstructured pruning); otherwise one line says what to export."""
    from genlab.compression.storage import export_obstacle

    obstacle = export_obstacle(checkpoint, cfg.compress.prune.method == "structured")
    if obstacle is not None:
        raise ConfigError(
            f"run {short(str(root))} is compressed with {obstacle}, which --format {format} "
            "cannot hold; export the source run, or a run compressed with "
            "compress.prune.method=magnitude|wanda and compress.quantize=none"
        )


def _check_target(target: Path, run_root: Path, overwrite: bool) -> None:
    resolved, root = target.resolve(), run_root.resolve()
    if resolved == root or root.is_relative_to(resolved):
        raise RunDirError(
            f"--out {str(target)!r} is (or contains) the run directory itself; pick a new "
            f"directory such as {str(run_root / 'export')!r}"
        )
    if target.exists() and not target.is_dir():
        raise RunDirError(f"--out {str(target)!r} is a file; pass a directory path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise RunDirError(
            f"export directory {str(target)!r} is not empty; pass --overwrite to replace it "
            "or --out to choose another"
        )
    require_writable(target, "--out")


@contextmanager
def _staging(target: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of `target` to write into; renamed to `target` when the block
    finishes, removed (with the parent directories it created) when it raises."""
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the export private to this user
    try:
        yield work
        _fsync_tree(work)
        old = None
        if target.is_dir() and any(target.iterdir()):
            if not overwrite:  # appeared while we worked
                raise RunDirError(
                    f"export directory {str(target)!r} filled up during the export; pass "
                    "--overwrite or another --out"
                )
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        elif target.is_dir():
            target.rmdir()
        try:
            work.rename(target)
        except OSError:
            if old is not None:  # put the previous export back
                old.rename(target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for parent in created:  # innermost first; only while empty
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def _fsync_tree(root: Path) -> None:
    """Flush every file (and directory) under `root` to disk before the rename publishes it."""
    for path in sorted(root.rglob("*"), reverse=True):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_entries(root: Path) -> list[dict[str, Any]]:
    """Every file under `root` (export.json aside): path, bytes and sha256."""
    from genlab.data.storage import file_sha256

    return [
        {
            "path": p.relative_to(root).as_posix(),
            "bytes": p.stat().st_size,
            "sha256": file_sha256(p),
        }
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != EXPORT_RECORD
    ]


def _record(job: ExportJob, work: Path, part: dict[str, Any]) -> dict[str, Any]:
    from genlab import __version__

    return {
        "format": job.options.format,
        "genlab_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run": {
            "dir": str(job.run.root),
            "name": job.cfg.name,
            "family": job.family,
            "checkpoint": job.describe_checkpoint(),
        },
        "options": {"adapter": job.options.adapter, "gguf_type": job.options.gguf_type},
        **part,
        "notes": job.notes,
        "files": file_entries(work),
    }


__all__ = [
    "DEFAULT_GGUF_TYPE",
    "EXPORT_RECORD",
    "GGUF_TYPES",
    "ExportJob",
    "ExportOptions",
    "ExportResult",
    "Exporter",
    "export_run",
    "file_entries",
    "merged_copy",
]
