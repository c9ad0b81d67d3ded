"""Time to quality: genlab's defaults against a plain nanoGPT-default loop, same wall time.

Both train the quickstart model (examples/lm.yaml: GPT 4 x 128, block 128, batch 32, char
tokenizer) on the same prepared split (one dataset cache entry, the same validation windows)
and are scored by the same function (`score_lm` on `train.eval_batches` x `batch_size` evenly
spaced validation windows, what genlab's val/loss is).

- genlab: `genlab.train` with the example's settings and every other default (warmup + cosine
  schedule, weight decay, clipping, the guard, precision auto, its evaluations and
  checkpoints). Its max_steps is set so that the run takes about the wall time (a short probe
  measures its pace per step), so the schedule (warmup, cosine decay) ends where the time does.
- plain: nanoGPT's defaults: AdamW at a constant lr 1e-3, no warmup, no weight decay, no
  clipping, fp32; it trains for the same wall time genlab's whole run took (genlab's
  evaluations and checkpoint saves included: the plain loop gets that time for training).

    .venv/bin/python benchmarks/time_to_quality.py [--minutes 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from genlab import config
from genlab.data.lm import WindowSampler, build_lm_data, val_starts, windows
from genlab.evaluation.text import score_lm, target_byte_counter
from genlab.models.gpt import build_gpt
from genlab.threads import use_threads
from genlab.track.logs import read_jsonl
from genlab.training.loop import train
from genlab.training.precision import native_bf16_cpu_flags

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "lm.yaml"
PROBE_STEPS = 20


def genlab_run(cfg: config.ExperimentConfig, out: Path) -> dict:
    quiet = Console(file=io.StringIO())
    t = time.perf_counter()
    train(cfg, out, overwrite=True, console=quiet)
    wall = time.perf_counter() - t
    final = json.loads((out / "metrics.json").read_text())
    return {"wall": wall, "val": final["val/loss"], "steps": cfg.train.max_steps, **final}


def plain_run(cfg: config.ExperimentConfig, data, seconds: float) -> dict:
    """nanoGPT's loop with its defaults, for `seconds` of wall time, then the same score."""
    torch.manual_seed(cfg.seed)
    model = build_gpt(cfg.model, data.tokenizer.vocab_size, cfg.data.block_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    sampler = WindowSampler(len(data.train_tokens), cfg.data.block_size, cfg.seed)
    steps, start = 0, time.perf_counter()
    model.train()
    while time.perf_counter() - start < seconds:
        _, starts = sampler.next_batch(cfg.train.batch_size)
        x, y = windows(data.train_tokens, starts, cfg.data.block_size)
        model.loss(x, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
    return {"wall": time.perf_counter() - start, "val": val_loss(cfg, data, model), "steps": steps}


def val_loss(cfg: config.ExperimentConfig, data, model: torch.nn.Module) -> float:
    """genlab's val/loss: score_lm over the same evenly spaced validation windows."""
    n = cfg.train.eval_batches * cfg.train.batch_size
    vx, vy = windows(
        data.val_tokens,
        val_starts(len(data.val_tokens), cfg.data.block_size, n),
        cfg.data.block_size,
    )
    bs = cfg.train.batch_size
    batches = ((vx[i : i + bs], vy[i : i + bs]) for i in range(0, len(vx), bs))
    score = score_lm(model, batches, target_byte_counter(data.tokenizer))
    return score.metrics()["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of each loop")
    args = parser.parse_args()
    budget = 60 * args.minutes
    base = config.load(EXAMPLE, ["train.progress=false"])
    use_threads(base.train.threads)
    data = build_lm_data(base.data, base.seed)  # the split both loops train and score on
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        probe_cfg = config.load(EXAMPLE, ["train.progress=false", f"train.max_steps={PROBE_STEPS}"])
        genlab_run(probe_cfg, Path(tmp) / "probe")
        # The probe's pace per step (its metrics' wall times, leaving out the first steps and
        # the last, which evaluates); 10% of the budget is left for evaluations and saves.
        times = [r["time"] for r in read_jsonl(Path(tmp) / "probe" / "metrics.jsonl")]
        pace = (times[-2] - times[4]) / (len(times) - 6)
        steps = max(PROBE_STEPS, int(0.9 * budget / pace))
        cfg = config.load(EXAMPLE, ["train.progress=false", f"train.max_steps={steps}"])
        ours = genlab_run(cfg, Path(tmp) / "genlab")
    theirs = plain_run(base, data, ours["wall"])
    load_after = os.getloadavg()
    bf16 = ", ".join(native_bf16_cpu_flags()) or "none"
    print(
        f"\ntime to quality — examples/lm.yaml model, {args.minutes:g} min budget, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, native bf16 flags: {bf16}, "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(f"| {'loop':<40} | {'wall s':>7} | {'steps':>6} | {'val loss':>8} |")
    print(f"|{'-' * 42}|{'-' * 9}|{'-' * 8}|{'-' * 10}|")
    precision = ours.get("precision", {}).get("chosen", "fp32")
    rows = (
        (f"genlab defaults (precision {precision})", ours),
        ("plain nanoGPT defaults (lr 1e-3 const)", theirs),
    )
    for name, r in rows:
        print(f"| {name:<40} | {r['wall']:>7.1f} | {r['steps']:>6} | {r['val']:>8.4f} |")
    gain = 1 - ours["val"] / theirs["val"]
    print(f"genlab's val loss is {gain:.1%} lower (goal >= 5%)")


if __name__ == "__main__":
    main()
