"""What `genlab compress` is asked to do, checked before torch is imported: the run, its
config with the `compress.*` overrides, the variant's name and the output directory. A bad
request fails here in a fraction of a second, and nothing is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genlab import config as config_mod
from genlab.config import ExperimentConfig
from genlab.errors import ConfigError, RunDirError
from genlab.fileio import require_writable
from genlab.safe_yaml import short
from genlab.track.rundir import RunDir, open_existing


@dataclass(frozen=True)
class Request:
    run: RunDir
    cfg: ExperimentConfig
    name: str  # "" for a sweep
    out: Path


def resolve(
    run_dir: str | Path,
    overrides: Sequence[str],
    out: str | Path | None,
    sweep: bool,
    overwrite: bool,
) -> Request:
    """The checked request (ConfigError / RunDirError otherwise)."""
    for item in overrides:
        if not item.split("=", 1)[0].strip().startswith("compress."):
            raise ConfigError(
                f"genlab compress takes compress.* overrides only, got {item[:60]!r}; the model "
                "and data come from the run (e.g. compress.quantize=int8_dynamic)"
            )
    run = open_existing(Path(run_dir))
    cfg = config_mod.load(run.config, list(overrides))
    if cfg.task != "generate":
        raise ConfigError(
            f"genlab compress scores language models (perplexity) and image generators (FID) "
            f"before and after; {short(str(run.root))} is a task {cfg.task!r} run, which it does "
            "not compress yet (export it as it is with genlab export RUN --format onnx)"
        )
    if cfg.compress.recover_from is not None:
        raise ConfigError(
            f"{str(run.root)!r} is a recovery run of genlab compress (compress.recover_from is "
            "set); compress the source run instead"
        )
    if sweep:
        target = Path(out) if out is not None else run.root / "compressed" / "sweep"
        if target.exists() and not target.is_dir():
            raise RunDirError(f"--out {str(target)!r} is a file; pass a directory path")
        require_writable(target, "--out", given=out is not None)
        return Request(run, cfg, "", target)
    spec = cfg.compress
    if spec.recover_steps and spec.prune.method == "none":  # (a sweep's recovery length)
        raise ConfigError(
            f"compress.recover_steps={spec.recover_steps} fine-tunes a pruned model, but "
            "compress.prune.method is 'none'; set a prune method or recover_steps=0"
        )
    name = spec.name or variant_name(cfg)
    if not name:
        raise ConfigError(
            "nothing to compress: compress.quantize is 'none' and compress.prune.method is "
            "'none'; set one, e.g. compress.quantize=int8_dynamic (or use --sweep)"
        )
    target = Path(out) if out is not None else run.root / "compressed" / name
    check_output(target, overwrite, given=out is not None)
    return Request(run, cfg, name, target)


def variant_name(cfg: ExperimentConfig) -> str:
    """A name from the settings, e.g. `wanda50-r200+int8_dynamic` ("" when nothing is set)."""
    spec, parts = cfg.compress, []
    p = spec.prune
    if p.method != "none":
        part = f"{p.method}{round(p.sparsity * 100)}"
        if p.method == "magnitude" and p.scope == "global":
            part += "-global"
        if p.schedule == "gradual":
            part += "-gradual"
        if spec.recover_steps:
            part += f"-r{spec.recover_steps}"
        parts.append(part)
    if spec.quantize != "none":
        parts.append(spec.quantize)
    return "+".join(parts)


def check_output(out: Path, overwrite: bool, given: bool = True) -> None:
    """Refuse an output directory that is a file, holds another output (without
    --overwrite) or takes no writes; `given`: the user passed --out (else it is the
    default RUN_DIR/compressed/<name>)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {str(out)!r} is a file; pass a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RunDirError(
            f"output directory {str(out)!r} is not empty; pass --overwrite to replace it, "
            "--out to choose another, or set compress.name"
        )
    require_writable(out, "--out", given)  # before the model is loaded and compressed


__all__ = ["Request", "check_output", "resolve", "variant_name"]
