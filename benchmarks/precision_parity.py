"""Precision parity: the quickstart trained in fp32 and in bf16 autocast, everything else equal.

Both runs train examples/lm.yaml for its full 800 steps (same seed, same prepared split, same
validation windows) and report genlab's own val/loss at the end and the median tokens/s of
their steps. Goal (issue 19): bf16's final val loss within 1% of fp32's. Also prints what
`train.precision: auto` chooses for this model on this machine, and why.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/precision_parity.py [--steps 800]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from genlab import config
from genlab.threads import use_threads
from genlab.track.logs import read_jsonl
from genlab.training.loop import train
from genlab.training.precision import native_bf16_cpu_flags

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lm.yaml"


def run(precision: str, steps: int, root: Path) -> dict:
    settings = [f"train.max_steps={steps}", f"train.precision={precision}"]
    cfg = config.load(EXAMPLE, ["train.progress=false", *settings])
    use_threads(cfg.train.threads)
    out = root / precision
    t = time.perf_counter()
    train(cfg, out, overwrite=True, console=Console(file=io.StringIO()))
    wall = time.perf_counter() - t
    final = json.loads((out / "metrics.json").read_text())
    rates = [r["throughput/tokens_per_s"] for r in read_jsonl(out / "metrics.jsonl")[5:]]
    return {
        "val": final["val/loss"],
        "tokens_per_s": statistics.median(rates),
        "wall": wall,
        "precision": final.get("precision", {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {p: run(p, args.steps, Path(tmp)) for p in ("fp32", "bf16")}
        # What auto picks (its calibration runs before the first step): a short run tells.
        choice = run("auto", 10, Path(tmp))["precision"]
    bf16 = ", ".join(native_bf16_cpu_flags()) or "none"
    print(
        f"\nprecision parity — examples/lm.yaml, {args.steps} steps, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, native bf16 flags: {bf16}, load average "
        f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"| {'train.precision':<16} | {'val loss':>9} | {'vs fp32':>9} | {'tokens/s':>9} |")
    print(f"|{'-' * 18}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for label, r in rows.items():
        delta = r["val"] / rows["fp32"]["val"] - 1
        print(f"| {label:<32} | {r['val']:>8.4f} | {delta:>+8.2%} | {r['tokens_per_s']:>9,.0f} |")
    print(f"train.precision=auto chooses {choice.get('chosen')}: {choice.get('reason')}")
    gap = abs(rows["bf16"]["val"] / rows["fp32"]["val"] - 1)
    print(f"bf16 vs fp32 final val loss: {gap:.4%} apart (goal <= 1%)")


if __name__ == "__main__":
    main()
