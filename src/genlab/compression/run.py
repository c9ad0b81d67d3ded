"""`genlab compress RUN_DIR`: prune (and recover), quantize, gate, save as a run directory,
and measure the original and the result (see genlab.compression for the whole story).

Everything that can be checked is checked before anything is written (the config, the
quantizer's kernel, the source checkpoint, the output directory). Work happens in
`<out>.partial/`, renamed to `<out>` at the very end: a failed command (exit 2, e.g. the quality
gate) removes it, a killed one leaves it, and running the same command again resumes from it
(a recovery run continues from its last checkpoint, exactly).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from genlab import config as config_mod
from genlab.compression.gate import GateUnit, relative_loss, run_gate
from genlab.compression.layers import find_layers, structure_of
from genlab.compression.prune import PrunePlan, make_plan, zero_fraction
from genlab.compression.quantize import QUANTIZERS, quantizable, quantize_layers
from genlab.compression.recovery import compressed_config, recovery_config, run_recovery
from genlab.compression.settings import Request, check_output, variant_name
from genlab.compression.storage import save_compressed
from genlab.compression.subject import Subject, load_subject
from genlab.compression.table import read_table, write_table
from genlab.config import ExperimentConfig
from genlab.errors import GenlabError
from genlab.fileio import atomic_write_text
from genlab.track.rundir import RunDir
from genlab.training import checkpoint as ckpt

DATA_ARTIFACTS = ("tokenizer.json", "data.json", "scaler.json", "hf_pretrained")
SWEEP_RECOVER_STEPS = 100  # the sweep's "with recovery" rows when compress.recover_steps is 0


@dataclass
class CompressionResult:
    """What `genlab.compress` returns: where the result is, and the table's rows."""

    out_dir: Path
    rows: list[dict[str, Any]]
    gate: dict[str, Any] | None = None


@dataclass
class Variant:
    """A compressed module and what was done to it."""

    model: nn.Module
    quantized: dict[str, str] = field(default_factory=dict)
    structure: dict[str, dict] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)  # prune.exclude, the gate's included
    keep: list[str] = field(default_factory=list)  # keep_fp32, the gate's included
    params: int = 0
    nonzero: int = 0
    sparsity: float | None = None
    units: list[GateUnit] = field(default_factory=list)  # what the gate may keep
    kept: list[str] = field(default_factory=list)  # what the gate kept uncompressed


# --------------------------------------------------------------------------- entry point


def compress_request(
    request: Request, overwrite: bool = False, console: Console | None = None
) -> CompressionResult:
    """Carry out a checked request (genlab.compression.settings.resolve; genlab.compress
    is the public door)."""
    console = console or Console(stderr=True)
    if not request.name:
        return compress_sweep(request.run, request.cfg, request.out, console)
    return compress_one(request.run, request.cfg, request.out, overwrite, console)


def compress_one(
    run: RunDir,
    cfg: ExperimentConfig,
    out: Path | None,
    overwrite: bool,
    console: Console,
    original: dict[str, Any] | None = None,
) -> CompressionResult:
    spec = cfg.compress
    name = spec.name or variant_name(cfg)
    given = out is not None
    out = out if out is not None else run.root / "compressed" / name
    check_output(out, overwrite, given)
    device = torch.device("cpu")
    if spec.quantize == "int4_weight_only" and torch.cuda.is_available():
        device = torch.device("cuda")
    if spec.quantize != "none":
        QUANTIZERS.lookup(spec.quantize, where="compress.quantize").check(device)
    from genlab.evaluation.run import pick_checkpoint

    info = pick_checkpoint(run, None)  # a run without checkpoints fails here
    subject = load_subject(run.root, cfg, info)  # data and model problems fail here
    console.print(f"[bold]genlab compress[/] {run.root} (step {info.step}) → {out}: {name}")
    if original is None:
        original = original_row(subject, console)
    partial = _partial_dir(out, cfg, info)
    try:
        variant, gate = _build_with_gate(subject, cfg, partial, original, console)
        _save(partial, subject, cfg, name, variant, info, device)
        row = _variant_row(name, subject, partial, variant, console)
        extra = {
            "source": {"run": str(run.root.resolve()), "checkpoint": str(info.path.resolve())},
            "settings": cfg.compress.model_dump(mode="json"),
            "gate": gate,
        }
        write_table(partial, [original, row], extra, subject.main_metric)
        _write_metrics(partial, row, info.step + spec.recover_steps)
    except GenlabError:
        shutil.rmtree(partial, ignore_errors=True)  # a user error leaves nothing behind
        raise
    if out.exists():
        shutil.rmtree(out)  # --overwrite (checked above)
    os.replace(partial, out)
    console.print(f"wrote {out} (compression.json, plots/compression.png)")
    return CompressionResult(out, [original, row], gate)


def _partial_dir(out: Path, cfg: ExperimentConfig, info: ckpt.CheckpointInfo) -> Path:
    """`<out>.partial`: kept from an interrupted attempt with the same request (its recovery
    resumes), started afresh otherwise."""
    partial = out.with_name(out.name + ".partial")
    request = {"source": str(info.path.resolve()), "compress": cfg.compress.model_dump(mode="json")}
    record = partial / "request.json"
    if partial.is_dir() and (
        not record.is_file() or json.loads(record.read_text(encoding="utf-8")) != request
    ):
        shutil.rmtree(partial)  # another request's leftovers (ours: a .partial directory)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps(request, indent=2) + "\n")
    return partial


def _file_mb(checkpoint: Path, key: str) -> float | None:
    """MB of a checkpoint's `<key>.safetensors` (None for a sharded checkpoint)."""
    file = checkpoint / f"{key}.safetensors"
    return file.stat().st_size / 2**20 if file.is_file() else None


# --------------------------------------------------------------------------- building


def _build_with_gate(
    subject: Subject, cfg: ExperimentConfig, partial: Path, original: dict, console: Console
) -> tuple[Variant, dict | None]:
    spec = cfg.compress
    before = original[subject.main_metric]

    def loss_of(model: nn.Module) -> float:
        after = subject.quality(model, False)[subject.main_metric]
        return relative_loss(before, after, subject.higher_is_better)

    built: dict[tuple[str, ...], Variant] = {}

    def build(kept: list[GateUnit]) -> Variant:
        key = tuple(sorted(str(u) for u in kept))
        if key not in built:
            built.clear()  # one variant in memory at a time
            built[key] = build_variant(subject, cfg, kept, partial, console)
        return built[key]

    if spec.max_quality_loss is None:
        return build([]), None
    full = build([])
    result = run_gate(
        full.units,
        lambda kept: loss_of(build(kept).model),
        lambda unit: loss_of(probe_variant(subject, cfg, unit)),
        spec.max_quality_loss,
        doubling=spec.recover_steps > 0,
        say=console.print,
    )
    if result.kept:
        console.print(f"gate: kept uncompressed: {', '.join(str(u) for u in result.kept)}")
    return build(result.kept), result.to_dict()


def build_variant(
    subject: Subject,
    cfg: ExperimentConfig,
    kept: Sequence[GateUnit],
    partial: Path,
    console: Console,
) -> Variant:
    """Prune (and recover), then quantize, a copy of the subject's module; units in `kept`
    stay uncompressed."""
    spec = cfg.compress
    p = spec.prune
    exclude = [*p.exclude, *(u.name for u in kept if u.kind == "prune")]
    keep = [*spec.keep_fp32, *(u.name for u in kept if u.kind == "quantize")]
    model = copy.deepcopy(subject.model)
    plan = PrunePlan(p.method)
    if p.schedule == "oneshot":
        plan = make_plan(model, p.method, p.sparsity, exclude, p.scope, subject.calibrate)
        plan.apply(model)
    pruned_layers = list(plan.masks) or (
        list(find_layers(model, exclude)) if p.method != "none" else []
    )
    if spec.recover_steps:
        round_cfg = _with_compress(cfg, **{"prune.exclude": exclude, "keep_fp32": keep})
        rec = recovery_config(round_cfg, subject.checkpoint.path)
        done = run_recovery(rec, partial / "recovery" / f"round-{len(kept)}", console)
        ckpt.load_weights(done.path, {subject.key: model})
    units = [GateUnit("prune", u) for u in _prune_units(plan, pruned_layers)]
    variant = Variant(model, exclude=exclude, keep=keep, units=units, kept=[str(u) for u in kept])
    variant.params = sum(t.numel() for t in model.parameters())
    variant.nonzero = sum(int((t != 0).sum()) for t in model.parameters())
    if plan.cuts:
        removed = sum(c.removed for c in plan.cuts.values())
        variant.sparsity = removed / max(1, sum(c.total for c in plan.cuts.values()))
    elif pruned_layers:
        variant.sparsity = zero_fraction(model, pruned_layers)
    variant.structure = structure_of(model)
    if spec.quantize != "none":
        names = list(quantizable(model, spec.quantize, keep))
        variant.quantized = quantize_layers(model, spec.quantize, names)
        variant.units += [GateUnit("quantize", n) for n in names]
    model.eval()
    return variant


def _prune_units(plan: PrunePlan, layers: list[str]) -> list[str]:
    return list(plan.cuts) if plan.cuts else layers


def probe_variant(subject: Subject, cfg: ExperimentConfig, unit: GateUnit) -> nn.Module:
    """The subject's module with only `unit` compressed (no recovery): its sensitivity."""
    spec = cfg.compress
    model = copy.deepcopy(subject.model)
    if unit.kind == "prune":
        p = spec.prune
        plan = make_plan(model, p.method, p.sparsity, p.exclude, p.scope, subject.calibrate)
        if not plan.masks and not plan.cuts:  # gradual: the unit at its final sparsity
            plan = make_plan(model, "magnitude", p.sparsity, p.exclude, p.scope, subject.calibrate)
        plan.only([unit.name]).apply(model)
    else:
        quantize_layers(model, spec.quantize, [unit.name])
    return model.eval()


def _with_compress(cfg: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    raw = cfg.to_dict()
    for key, value in changes.items():
        node = raw["compress"]
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return config_mod.from_dict(raw, origin="compress settings")


# --------------------------------------------------------------------------- saving


def _save(
    partial: Path,
    subject: Subject,
    cfg: ExperimentConfig,
    name: str,
    variant: Variant,
    info: ckpt.CheckpointInfo,
    device: torch.device,
) -> None:
    """Make `partial` a run directory holding the compressed model."""
    spec = cfg.compress
    raw = compressed_config(cfg, name=name, keep_fp32=variant.keep, recover_from=None)
    raw["compress"]["prune"]["exclude"] = variant.exclude
    if spec.quantize == "int8_dynamic":
        raw["train"]["device"] = "cpu"  # PyTorch's x86 int8 kernel
    elif device.type == "cuda":
        raw["train"]["device"] = "cuda"
    out_cfg = config_mod.from_dict(raw, origin="compressed config")
    (partial / "config.yaml").write_text(out_cfg.to_yaml(), encoding="utf-8")
    for artifact in DATA_ARTIFACTS:
        src = subject.root / artifact
        if src.is_dir():
            shutil.copytree(src, partial / artifact, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, partial / artifact)
    modules = {subject.key: (variant.model, variant.quantized, variant.structure, subject.conv1d)}
    for key, module in subject.extra.items():
        modules[key] = (module, {}, structure_of(module), [])
    step = info.step + spec.recover_steps
    state = {"step": step, "compressed_from": str(info.path.resolve())}
    root = partial / "checkpoints"
    if root.is_dir():  # a previous attempt's compressed checkpoint
        shutil.rmtree(root)
    save_compressed(root, step, modules, state, out_cfg.to_yaml())
    for leftover in (partial / "recovery").glob("round-*/checkpoints"):
        shutil.rmtree(leftover)  # full-precision recovery checkpoints: their job is done
    (partial / "request.json").unlink(missing_ok=True)


def _write_metrics(partial: Path, row: dict[str, Any], step: int) -> None:
    metrics = {f"eval/{k}": v for k, v in row.items() if "/" in k}
    doc = {"step": step, "split": "val", **metrics, "evaluated_step": step}
    atomic_write_text(partial / "metrics.json", json.dumps(doc, indent=2) + "\n")


# --------------------------------------------------------------------------- measuring


def original_row(subject: Subject, console: Console) -> dict[str, Any]:
    """The original model's row (quality in-process, speed and memory in a fresh process)."""
    console.print("measuring the original model")
    model = subject.model
    file_key = subject.key
    if (subject.checkpoint.path / "generator_ema.safetensors").is_file():
        file_key = "generator_ema"  # the GAN samples from its EMA generator
    row: dict[str, Any] = {
        "name": "original",
        "method": "fp32",
        "params": sum(t.numel() for t in model.parameters()),
        "nonzero_params": sum(int((t != 0).sum()) for t in model.parameters()),
        "file_mb": _file_mb(subject.checkpoint.path, file_key),
        "run_dir": str(subject.root),
    }
    if subject.cfg.compress.measure_speed:
        row.update(measure_in_subprocess(subject.root))
    row.update(subject.quality(model, True))
    return row


def _variant_row(
    name: str, subject: Subject, run_dir: Path, variant: Variant, console: Console
) -> dict[str, Any]:
    console.print(f"measuring {name} (reloaded from {run_dir})")
    reloaded = _reload(subject, run_dir)
    info = ckpt.latest(run_dir / "checkpoints")
    row: dict[str, Any] = {
        "name": name,
        "method": name,
        "params": variant.params,
        "nonzero_params": variant.nonzero,
        "sparsity": variant.sparsity,
        "quantized_layers": len(variant.quantized),
        "kept": variant.kept,
        "file_mb": _file_mb(info.path, subject.key),
        "run_dir": str(run_dir.with_name(run_dir.name.removesuffix(".partial"))),
    }
    if subject.cfg.compress.measure_speed:
        row.update(measure_in_subprocess(run_dir))
    row.update(subject.quality(reloaded, True))
    return row


def _reload(subject: Subject, run_dir: Path) -> nn.Module:
    """The compressed module as `genlab eval` loads it (the normal loading path)."""
    if subject.family in ("gpt", "hf"):
        from genlab.evaluation.run import load_run_model

        return load_run_model(run_dir, device="cpu").model
    from genlab.image_generation import load_image_run

    family = load_image_run(run_dir).family
    return family.model if subject.family == "vae" else family.gan.generator


def measure_in_subprocess(run_dir: Path) -> dict[str, float]:
    """Speed and memory of a run's model, measured by a fresh process (measure.py)."""
    cmd = [sys.executable, "-m", "genlab.compression.measure", str(run_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {run_dir} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- sweep


def sweep_grid(recover_steps: int) -> list[list[str]]:
    """The default grid: int8 dynamic, int8 weight-only, 25/50/75% magnitude and Wanda
    without and with recovery, structured 25%."""
    grid = [["compress.quantize=int8_dynamic"], ["compress.quantize=int8_weight_only"]]
    for method in ("magnitude", "wanda"):
        for sparsity in (0.25, 0.5, 0.75):
            for steps in (0, recover_steps):
                grid.append(
                    [
                        f"compress.prune.method={method}",
                        f"compress.prune.sparsity={sparsity}",
                        f"compress.recover_steps={steps}",
                    ]
                )
    grid.append(["compress.prune.method=structured", "compress.prune.sparsity=0.25"])
    return grid


def compress_sweep(
    run: RunDir, cfg: ExperimentConfig, out: Path | None, console: Console
) -> CompressionResult:
    """Every grid setting as its own compressed run (`RUN/compressed/<name>`, reused when it
    exists), and one table + plot of them all in `out` (default RUN/compressed/sweep)."""
    out = out if out is not None else run.root / "compressed" / "sweep"
    base = cfg.to_dict()
    base["compress"].update(
        quantize="none", recover_steps=0, max_quality_loss=None, name=None, recover_from=None
    )
    base["compress"]["prune"].update(method="none", schedule="oneshot")
    steps = cfg.compress.recover_steps or SWEEP_RECOVER_STEPS
    variants = [
        config_mod.from_dict(config_mod.apply_overrides(base, point), origin="sweep")
        for point in sweep_grid(steps)
    ]
    from genlab.evaluation.run import pick_checkpoint

    info = pick_checkpoint(run, None)
    subject = load_subject(run.root, cfg, info)
    original = original_row(subject, console)
    rows = [original]
    for variant_cfg in variants:
        target = run.root / "compressed" / variant_name(variant_cfg)
        if (target / "compression.json").is_file():
            console.print(f"sweep: reusing {target}")
            rows.append(read_table(target)["rows"][-1])
            continue
        rows.append(compress_one(run, variant_cfg, target, False, console, original).rows[-1])
    out.mkdir(parents=True, exist_ok=True)
    write_table(out, rows, {"source": {"run": str(run.root.resolve())}}, subject.main_metric)
    console.print(f"wrote {out} (compression.json, plots/compression.png)")
    return CompressionResult(out, rows)


__all__ = ["CompressionResult", "compress_one", "compress_request", "compress_sweep", "sweep_grid"]
