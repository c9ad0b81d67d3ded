"""How close to the hardware a run trains: model FLOPs utilization (`throughput/mfu`).

MFU = the model's FLOPs per token × tokens/s ÷ the device's matmul peak for the dtype in use.
FLOPs per token follow the usual convention (PaLM, nanoGPT): 6 × the matmul weights (forward
2, backward 4, whether or not a weight is frozen) plus attention's 12 · layers · width · context
(scores and the weighted sum, forward and backward, counted over the whole context). The peak
is measured, not looked up: the best of a few large square matmuls on this device, once per
machine and dtype, cached in `~/.cache/genlab/matmul_peak.json` (the machine cache directory,
`$GENLAB_MACHINE_CACHE` when set; training/precision.py keeps its calibrations there too).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.fileio import atomic_write_text

MACHINE_CACHE_ENV = "GENLAB_MACHINE_CACHE"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_weights(model: nn.Module) -> int:
    """Weights that multiply activations: Linear layers and GPT-2's Conv1D (HF), each shared
    tensor once (a tied embedding counts as the output layer it is used as)."""
    seen: set[int] = set()
    total = 0
    for m in model.modules():
        is_matmul = isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"
        if is_matmul and id(m.weight) not in seen:
            seen.add(id(m.weight))
            total += m.weight.numel()
    return total


def lm_flops_per_token(model: nn.Module, n_layer: int, attn_width: int, context: int) -> float:
    """Training FLOPs per token of a decoder: 6 N (N: matmul weights) + 12 · L · C · T."""
    return 6.0 * matmul_weights(model) + 12.0 * n_layer * attn_width * context


def mfu(flops_per_unit: float, units_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilization: the share of the measured peak the training step achieves."""
    return flops_per_unit * units_per_s / peak_flops


# -- the measured peak ------------------------------------------------------------------------


# The CPU features that decide which matmul kernels run (x86: /proc/cpuinfo "flags"; Arm:
# "Features"). Virtual machines often report only a family name ("AMD EPYC") for processors
# with and without AVX-512, whose peaks differ by half: the key names the features too.
MATMUL_CPU_FEATURES = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
    "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm",
)  # fmt: skip


def machine_key(device: torch.device, dtype: torch.dtype | str) -> str:
    """What a measurement depends on: the processor (its name and matmul features), torch's
    threads, torch, the dtype."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        have = set(cpu_flags())
        features = "+".join(f for f in MATMUL_CPU_FEATURES if f in have) or "none"
        where = f"{cpu_model()} [{features}] x{torch.get_num_threads()} threads"
    return f"{device.type}|{where}|torch {torch.__version__}|{dtype}"


def cpu_flags() -> list[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo); empty where it has none."""
    return (cpuinfo_field("flags") or cpuinfo_field("Features") or "").split()


def cpuinfo_field(name: str) -> str | None:
    """The first `name` line's value in /proc/cpuinfo (Linux); None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def machine_cache_dir() -> Path:
    """Where per-machine measurements live (not per project: the hardware is the same)."""
    env = os.environ.get(MACHINE_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "genlab"


def cached_measurement(
    name: str, key: str, measure: Callable[[], Any], keep: Callable[[], bool] = lambda: True
) -> tuple[Any, bool]:
    """`measure()` once per `key`, kept in `<machine cache>/<name>`: (value, whether it came
    from the cache). An unreadable or unwritable cache only means measuring again; a
    measurement `keep()` rejects (taken on a busy machine) is used once and not stored."""
    path = machine_cache_dir() / name
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    cached = cached if isinstance(cached, dict) else {}
    if key in cached:
        return cached[key], True
    value = measure()
    if not keep():
        return value, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**cached, key: value}, indent=1) + "\n")
    except OSError:
        pass
    return value, False


# A CPU measurement counts only when its threads had the cores to themselves: process CPU
# time over (wall time x threads) at least this (~0.95 on an idle 2-core machine, ~0.6 with
# two other busy processes). A peak measured on a busy machine would be cached for good and
# make every later MFU read high (seen: 15 against 156 GFLOP/s).
QUIET_SHARE = 0.8


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of this device's matmuls in `dtype`: measured once on a machine quiet enough,
    then read from the cache (on a busy one it is measured again next time)."""
    key = machine_key(device, dtype)
    shares: list[float] = []

    def measure() -> float:
        cpu, wall = time.process_time(), time.perf_counter()
        value = measure_matmul_peak(device, dtype)
        shares.append(cpu_share(time.process_time() - cpu, time.perf_counter() - wall))
        return value

    quiet = lambda: device.type != "cpu" or min(shares, default=1.0) >= QUIET_SHARE  # noqa: E731
    value, _ = cached_measurement("matmul_peak.json", key, measure, keep=quiet)
    if not isinstance(value, int | float) or value <= 0:  # a damaged entry: measure again
        value = measure_matmul_peak(device, dtype)
    return float(value)


def cpu_share(cpu_s: float, wall_s: float) -> float:
    """The share of its threads' cores a measurement had: process CPU time over wall time x
    threads (1.0 for one too short to tell)."""
    if wall_s < 0.05:
        return 1.0
    return cpu_s / (wall_s * torch.get_num_threads())


SLOW_MATMUL_S = 0.25  # a CPU matmul slower than this needs no warm-up to be timed
MEASURE_BUDGET_S = 2.0  # a CPU measurement stops after this long (once one is timed)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 8) -> float:
    """The best of `repeats` square matmuls (n = 1024 on CPU, 8192 on GPU): a practical
    peak, what a well-shaped matmul reaches here (about a second on a CPU). The operands come
    from a private generator: whether the cache held the value must not change the run's
    random numbers (dropout, sampling) after it."""
    n = 8192 if device.type == "cuda" else 1024
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    if device.type == "cuda":
        return 2 * n**3 / _cuda_seconds_per_matmul(a, b, repeats)
    best, spent = float("inf"), 0.0
    for i in range(repeats + 2):  # two warm-ups
        t = time.perf_counter()
        a @ b
        took = time.perf_counter() - t
        # A dtype the CPU emulates (bf16 without AVX-512 BF16/AMX: ~2 s a matmul) is its
        # own warm-up, and a couple of seconds of it tell its speed well enough.
        if i >= 2 or took > SLOW_MATMUL_S:
            best = min(best, took)
        spent += took
        if spent > MEASURE_BUDGET_S and best < float("inf"):
            break
    return 2 * n**3 / best


def _cuda_seconds_per_matmul(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """A GPU idles at a low clock and one matmul takes ~1 ms there: warm it up for ~0.3 s,
    then time `repeats` runs of 10 back-to-back matmuls between CUDA events; the best run."""
    torch.cuda.synchronize(a.device)
    start = time.perf_counter()
    while time.perf_counter() - start < 0.3:
        a @ b
        torch.cuda.synchronize(a.device)
    best = float("inf")
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(10):
            a @ b
        end.record()
        end.synchronize()
        best = min(best, begin.elapsed_time(end) / 1e3 / 10)  # elapsed_time: milliseconds
    return best
