"""Training throughput: genlab's loop against a minimal hand-written PyTorch loop.

Same model (genlab's GPT: 4 layers, 4 heads, 128 wide: the quickstart's), block 128, batch
32, char tokenizer, AdamW, grad clipping, fp32; the hand-written loop is nanoGPT's (its
optimizer as nanoGPT builds it: torch's AdamW, fused only on CUDA). The two loops alternate
in pairs, each going first in every other pair, so machine noise hits both alike; the table gives
medians and the median of the per-pair ratios. MFU is genlab's throughput/mfu measure (FLOPs per
token over the measured, cached fp32 matmul peak). Goal: genlab >= 1.00x the hand-written loop.

    .venv/bin/python benchmarks/train_throughput.py [--steps 60] [--rounds 5] [--compile] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from genlab import config
from genlab.data.lm import WindowSampler, build_lm_data, windows
from genlab.models.gpt import build_gpt
from genlab.threads import use_threads
from genlab.track.logs import read_jsonl
from genlab.training.efficiency import lm_flops_per_token, matmul_peak
from genlab.training.loop import train

# The quickstart model (examples/lm.yaml: GPT 4 x 128, block 128, batch 32, char tokens)
# with these settings on top.
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lm.yaml"
SETTINGS = [
    "train.progress=false",
    "schedule.warmup_steps=10",
    "train.precision=fp32",  # the goal is set on fp32 (auto may pick bf16: precision.py)
]
CPU = torch.device("cpu")
WARMUP_STEPS = 5  # steps left out of every measurement (allocator warm-up, first compile)
# --tiny: a model so small that its compute is ~2 ms a step, so what the table shows is the
# loops' own cost per step (sampling, guard, logging, the optimizer's kernel).
TINY_MODEL = [
    "data.block_size=32",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "train.batch_size=8",
]


def genlab_run(cfg: config.ExperimentConfig, out: Path) -> float:
    """tokens/s of genlab's own loop, from its metrics' wall-clock times."""
    train(cfg, out, overwrite=True)
    records = read_jsonl(out / "metrics.jsonl")[WARMUP_STEPS:]
    tokens = cfg.train.batch_size * cfg.data.block_size * (len(records) - 1)
    return tokens / (records[-1]["time"] - records[0]["time"])


def hand_run(cfg: config.ExperimentConfig, data, device: torch.device = CPU) -> float:
    """The loop a person would write: sample windows, forward (under bf16 autocast when the
    config says bf16; compiled when it says train.compile), backward, clip, step.
    (benchmarks/gpu.py runs it on a GPU.)"""
    torch.manual_seed(cfg.seed)
    model = build_gpt(cfg.model, data.tokenizer.vocab_size, cfg.data.block_size).to(device)
    if cfg.train.compile:
        model.compile()
    # nanoGPT's configure_optimizers: matrices decay, the rest not; fused on CUDA only.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=betas, fused=device.type == "cuda")
    bf16 = cfg.train.precision == "bf16"
    sampler = WindowSampler(len(data.train_tokens), cfg.data.block_size, cfg.seed)
    stamps = []  # wall clock after each step, as genlab stamps its metrics records
    for _ in range(cfg.train.max_steps):
        _, starts = sampler.next_batch(cfg.train.batch_size)
        x, y = (t.to(device) for t in windows(data.train_tokens, starts, cfg.data.block_size))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # genlab logs the loss every step; so does this loop
        stamps.append(time.perf_counter())
    # The same measure as genlab_run: tokens over the wall time between the stamps of the
    # first step after the warm-up and the last step.
    stamps = stamps[WARMUP_STEPS:]
    tokens = cfg.train.batch_size * cfg.data.block_size * (len(stamps) - 1)
    return tokens / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5, help="alternating pairs")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--tiny", action="store_true", help="a tiny model: the loops' own cost")
    args = parser.parse_args()
    overrides = [
        *SETTINGS,
        *(TINY_MODEL if args.tiny else []),
        f"train.max_steps={args.steps}",
        f"train.eval_every={10 * args.steps}",
        f"train.checkpoint_every={10 * args.steps}",
        f"train.sample_every={10 * args.steps}",
        f"train.compile={str(args.compile).lower()}",
    ]
    cfg = config.load(EXAMPLE, overrides)
    data = build_lm_data(cfg.data, cfg.seed)
    model = build_gpt(cfg.model, data.tokenizer.vocab_size, cfg.data.block_size)
    n_params = sum(p.numel() for p in model.parameters())
    # genlab's own measures (throughput/mfu): 6 N + 12 L C T per token, the cached fp32 peak.
    use_threads()
    fpt = lm_flops_per_token(model, cfg.model.n_layer, cfg.model.n_embd, cfg.data.block_size)
    peak = matmul_peak(torch.device("cpu"), torch.float32)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # One unmeasured run of each first: the process's first training run pays for cold
        # caches and allocator growth (measured ~3% slower), whichever loop it is.
        genlab_run(cfg, Path(tmp) / "warm-up")
        hand_run(cfg, data)
        for r in range(args.rounds):
            # Each loop goes first in every other pair, so what a run leaves behind (the
            # allocator's pages, caches, the CPU's clock) favours neither loop.
            if r % 2:
                theirs.append(hand_run(cfg, data))
                ours.append(genlab_run(cfg, Path(tmp) / f"run{r}"))
            else:
                ours.append(genlab_run(cfg, Path(tmp) / f"run{r}"))
                theirs.append(hand_run(cfg, data))
    g, h = statistics.median(ours), statistics.median(theirs)
    pair_ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\ntraining throughput — torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{n_params / 1e6:.2f}M params, {args.steps} steps x {args.rounds} pairs, "
        f"compile={args.compile}, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, "
        f"load average {load}"
    )
    print(f"{'loop':<14}{'tokens/s (median)':>18}  {'all rounds':<44}{'MFU':>8}")
    for name, rate, runs in (("hand-written", h, theirs), ("genlab", g, ours)):
        shown = ", ".join(f"{x:,.0f}" for x in runs)
        print(f"{name:<14}{rate:>18,.0f}  {shown:<44}{rate * fpt / peak:>8.1%}")
    print(f"{'ratio':<14}{g / h:>18.3f}   median of per-pair ratios {pair_ratio:.3f}")
    print("goal: ratio >= 1.00")


if __name__ == "__main__":
    main()
