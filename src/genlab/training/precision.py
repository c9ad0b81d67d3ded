"""`train.precision: auto`: bf16 autocast where the hardware computes bf16 natively and this
model measurably trains faster in it; fp32 otherwise.

Native bf16: a CUDA GPU that supports it, or a CPU with AMX (amx_bf16) or AVX-512 BF16
(avx512_bf16). Where it is native, a short calibration times a few forward + backward passes
of the run's own model in both precisions (alternating, medians) and bf16 is chosen only when
it is at least `MARGIN` faster: small models can be slower in bf16 (casts cost more than the
matmuls save). The measurement is cached per machine and model shape
(`<machine cache>/precision.json`, efficiency.py), so it runs once. The choice, the reason and
the measured speeds are printed and written to metrics.json (`precision`); the run's
config.yaml records the concrete precision, so resume, eval and generate use the same.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from genlab.config import ExperimentConfig
from genlab.training.efficiency import cached_measurement, cpu_flags, machine_key
from genlab.training.family import Family
from genlab.training.runtime import Autocast

MARGIN = 1.05  # bf16 must be this much faster: timing noise must not flip the choice
CALIBRATION_ROUNDS = 3  # timed passes per precision (after one warm-up each)
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass
class PrecisionChoice:
    requested: str  # auto, or the precision the config names
    chosen: str  # fp32 | bf16 | fp16
    reason: str
    speeds: dict[str, float] = field(default_factory=dict)  # precision → units/s measured
    unit: str = "tokens/s"
    cached: bool = False  # the speeds came from an earlier calibration on this machine

    def record(self) -> dict[str, Any]:
        """metrics.json's `precision` block."""
        return {
            "requested": self.requested,
            "chosen": self.chosen,
            "reason": self.reason,
            "calibration": {k: round(v, 1) for k, v in self.speeds.items()},
            "calibration_unit": self.unit,
            "calibration_cached": self.cached,
        }

    def line(self) -> str:
        """One line for the console."""
        measured = ", ".join(f"{k} {v:,.0f} {self.unit}" for k, v in self.speeds.items())
        where = f" ({measured}{', cached' if self.cached else ''})" if measured else ""
        return f"precision {self.requested} → {self.chosen}: {self.reason}{where}"


def with_precision(cfg: ExperimentConfig, precision: str) -> ExperimentConfig:
    """`cfg` naming `precision` (what a run's config.yaml records for `auto`)."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": precision})})


def native_bf16(device: torch.device) -> bool:
    """Whether this device computes bf16 in hardware (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(native_bf16_cpu_flags())


def native_bf16_cpu_flags() -> list[str]:
    """This CPU's flags that mean native bf16 (what the benchmarks print with their tables)."""
    return [f for f in cpu_flags() if f in NATIVE_BF16_CPU_FLAGS]


def decide(native: bool, speeds: dict[str, float] | None) -> tuple[str, str]:
    """(precision, reason) from what the hardware has and what was measured (units/s by
    precision; None: nothing could be measured for this model)."""
    if not native:
        return "fp32", "no native bf16 on this device"
    if not speeds:
        return "fp32", "this model family is not calibrated"
    ratio = speeds["bf16"] / speeds["fp32"]
    if ratio >= MARGIN:
        return "bf16", f"bf16 {ratio:.2f}x as fast as fp32 for this model"
    return "fp32", f"bf16 only {ratio:.2f}x as fast as fp32 for this model (needs {MARGIN}x)"


def resolve(
    requested: str,
    device: torch.device,
    shape_key: str,
    calibrate: Callable[[], dict[str, float]] | None,
    unit: str = "tokens/s",
) -> PrecisionChoice:
    """The concrete precision for `requested` (only `auto` is decided here). `calibrate`
    measures units/s by precision (None: the family cannot be calibrated); its result is
    cached under this machine and `shape_key`."""
    if requested != "auto":
        return PrecisionChoice(requested, requested, "set in the config")
    native = native_bf16(device)
    speeds, cached = None, False
    if native and calibrate is not None:
        key = f"{machine_key(device, 'autocast')}|{shape_key}"
        speeds, cached = cached_measurement("precision.json", key, calibrate)
    chosen, reason = decide(native, speeds)
    return PrecisionChoice(requested, chosen, reason, dict(speeds or {}), unit, cached)


def time_precisions(
    step: Callable[[], None], set_precision: Callable[[str], None], units: int
) -> dict[str, float]:
    """units/s of `step()` in fp32 and in bf16 (one warm-up each, then `CALIBRATION_ROUNDS`
    alternating timed passes; medians). Leaves the precision at fp32."""
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(CALIBRATION_ROUNDS + 1):
        for precision in times:
            set_precision(precision)
            t = time.perf_counter()
            step()
            if i > 0:
                times[precision].append(time.perf_counter() - t)
    set_precision("fp32")
    return {k: units / statistics.median(v) for k, v in times.items()}


def choose(
    cfg: ExperimentConfig, family: Family, amp: Autocast, device: torch.device
) -> PrecisionChoice:
    """`resolve` for a built family: its calibration step timed with `amp` switched between
    fp32 and bf16 (`amp` is left at fp32; the loop sets the choice), cached under the model's
    shape (the model section, the parameter count, the units per pass)."""
    step, per_pass = family.calibration_step, family.units_per_step // cfg.train.grad_accum
    params = sum(p.numel() for m in family.modules.values() for p in m.parameters())
    shape = hashlib.sha256(f"{cfg.model.model_dump_json()}|{params}|{per_pass}".encode())
    unit = family.throughput_key.split("/")[-1].replace("_per_s", "/s")  # tokens/s, samples/s

    def set_precision(precision: str) -> None:
        amp.precision = precision

    calibrate = None
    if step is not None:

        def calibrate() -> dict[str, float]:
            return time_precisions(step, set_precision, per_pass)

    key = f"{family.name}|{shape.hexdigest()[:16]}"
    return resolve(cfg.train.precision, device, key, calibrate, unit)
