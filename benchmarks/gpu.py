"""GPU readiness: genlab's CUDA path end to end, the MFU of a ~100M-parameter GPT in bf16, and
the stability guard's overhead on the GPU (goals: MFU >= 45% of the dense bf16 datasheet peak
on an H100/H200; the guard costs <= 2% of tokens/s).

Sized for one short device lease (a few minutes on an H200), in one process where it can be:
1. speed: a GPT --layers x --width (default 12 x 768, 85M matmul weights; block 1024, batch
   --batch, char tokens, bf16 autocast) for --steps steps, after one unmeasured run of genlab
   and of the hand-written loop, in --rounds alternating rounds of genlab with the guard on
   (the default), genlab with the guard off (`guard.enabled=false`) and nanoGPT's
   hand-written loop (fused AdamW, bf16 autocast, clipping, a loss read each step); then
   --compiled-rounds rounds with torch.compile. Both loops are benchmarks/train_throughput.py's
   (`genlab_run`, `hand_run`): tokens/s between the wall-clock stamps of the steps after the
   warm-up.
2. smoke: the quickstart for 20 steps through the real CLI (`python -m genlab.cli`: the device
   image has no `genlab` script), resumed to 30, evaluated, sampled; each command's exit code
   and seconds (a failure prints its last lines and the benchmark goes on; a command that hangs
   is stopped after 3 minutes).

MFU = genlab's FLOPs per token (efficiency.lm_flops_per_token: 6 N + 12 L C T) x tokens/s
over the datasheet's dense bf16 peak (H100/H200 SXM 989 TFLOP/s, A100 312), and beside it over
the bf16 matmul peak genlab measures on the device (the denominator of its throughput/mfu).
Guard overhead = 1 - tokens/s with the guard / without (median of the per-round ratios).

    .venv/bin/python benchmarks/gpu.py [--steps 60] [--rounds 3] [--compiled-rounds 1]
        [--layers 12] [--width 768] [--batch 16] [--no-smoke]
    .venv/bin/python benchmarks/gpu.py --tiny --steps 12 --rounds 1 --compiled-rounds 0  (no GPU:
        a tiny GPT on the CPU, in fp32, to check the script itself)

On the device machine (its image lacks pydantic and datasketch; carry wheels, see the device
tool's README):
    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        typing-extensions==4.15.0 datasketch==2.0.0
    (there) python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
        PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from train_throughput import genlab_run, hand_run  # (benchmarks/ is on sys.path)

from genlab import config
from genlab.data.lm import build_lm_data
from genlab.models.gpt import build_gpt
from genlab.training.efficiency import lm_flops_per_token, matmul_peak

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "lm.yaml"
SMOKE_TIMEOUT_S = 180
DATASHEET_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, SXM parts


def big(layers: int, width: int, batch: int) -> list[str]:
    """The GPU model: `layers` x `width` with 64-wide heads, block 1024, bf16 autocast."""
    return [
        f"model.n_layer={layers}",
        f"model.n_head={width // 64}",
        f"model.n_embd={width}",
        "data.block_size=1024",
        f"train.batch_size={batch}",
        "train.precision=bf16",
    ]


# --tiny: the same rows with a model a CPU trains in seconds (the script's own check).
TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "data.block_size=64",
    "train.batch_size=8",
    "train.precision=fp32",
    "train.device=cpu",
]


def settings(steps: int, shape: list[str], compiled: bool, guard: bool) -> list[str]:
    return [
        *shape,
        "data.tokenizer=char",
        "train.progress=false",
        "schedule.warmup_steps=10",
        f"train.max_steps={steps}",
        f"train.eval_every={10 * steps}",
        f"train.checkpoint_every={10 * steps}",
        f"train.sample_every={10 * steps}",
        "train.eval_batches=1",
        "train.sample_tokens=16",
        f"train.compile={str(compiled).lower()}",
        f"guard.enabled={str(guard).lower()}",
    ]


def smoke(tmp: Path, device_args: list[str]) -> None:
    """train -> resume -> eval -> generate through the CLI in fresh processes."""
    run = str(tmp / "smoke")
    quick = ["train.progress=false", "train.checkpoint_every=10", "train.eval_batches=2"]
    commands = [
        ["train", str(EXAMPLE), *quick, "train.max_steps=20", *device_args, "--run-dir", run],
        ["resume", run, "train.max_steps=30"],
        ["eval", run],
        ["generate", run, "--prompt", "The for statement", "--max-new-tokens", "40", "--seed", "1"],
    ]
    print("\nsmoke: the quickstart through `python -m genlab.cli`")
    for args in commands:
        start = time.perf_counter()
        try:  # a hung command must not eat the lease: it is reported and the rest goes on
            done = subprocess.run(
                [sys.executable, "-m", "genlab.cli", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=SMOKE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            print(f"  genlab {args[0]:<9} timed out after {SMOKE_TIMEOUT_S} s")
            continue
        took = time.perf_counter() - start
        print(f"  genlab {args[0]:<9} exit {done.returncode}  {took:6.1f}s")
        if done.returncode != 0:
            print("    " + "\n    ".join((done.stdout + done.stderr).splitlines()[-15:]))


def speed(tmp: Path, args: argparse.Namespace) -> None:
    device = torch.device("cpu" if args.tiny else "cuda")
    shape = TINY if args.tiny else big(args.layers, args.width, args.batch)
    base = config.load(EXAMPLE, settings(args.steps, shape, False, True))
    data = build_lm_data(base.data, base.seed)
    model = build_gpt(base.model, data.tokenizer.vocab_size, base.data.block_size)
    fpt = lm_flops_per_token(model, base.model.n_layer, base.model.n_embd, base.data.block_size)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    dtype = torch.float32 if args.tiny else torch.bfloat16
    measured = matmul_peak(device, dtype)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), 0.0)
    print(
        f"\nspeed: {name}, torch {torch.__version__}, GPT {base.model.n_layer} x "
        f"{base.model.n_embd} ({n_params / 1e6:.1f}M parameters), block {base.data.block_size}, "
        f"batch {base.train.batch_size}, {base.train.precision}, {args.steps} steps; "
        f"{fpt / 1e6:.0f} MFLOP per token; measured {dtype} matmul peak "
        f"{measured / 1e12:.1f} TFLOP/s, datasheet {sheet / 1e12:.0f} TFLOP/s"
    )
    rows: dict[str, list[float]] = {}
    modes = [(c, n) for c, n in ((False, args.rounds), (True, args.compiled_rounds)) if n > 0]
    for mode, (compiled, rounds) in enumerate(modes):
        on, off = (
            config.load(EXAMPLE, settings(args.steps, shape, compiled, guard))
            for guard in (True, False)
        )
        loops = {  # the hand-written loop has no guard; it reads the rest of `on`
            "genlab, guard on": lambda cfg=on: genlab_run(cfg, tmp / "on"),
            "genlab, guard off": lambda cfg=off: genlab_run(cfg, tmp / "off"),
            "hand-written": lambda cfg=on: hand_run(cfg, data, device),
        }
        # Unmeasured first runs of each kind of loop: a process's first run pays for cold
        # caches and allocator growth, whichever loop it is (train_throughput.py does the same).
        if mode == 0:
            loops["genlab, guard on"]()
            loops["hand-written"]()
        order = list(loops)
        for r in range(rounds):
            for label in order[r % 3 :] + order[: r % 3]:  # each loop goes first in turn
                key = f"{label}{', compiled' if compiled else ''}"
                rows.setdefault(key, []).append(loops[label]())
                print(f"  round {r + 1}: {key}: {rows[key][-1]:,.0f} tokens/s", flush=True)
    print("\n| loop | tokens/s (median) | rounds | MFU (datasheet) | MFU (measured peak) |")
    print("| --- | --- | --- | --- | --- |")
    for key, rates in rows.items():
        rate = statistics.median(rates)
        mfu_sheet = f"{rate * fpt / sheet:.1%}" if sheet else "n/a"
        shown = ", ".join(f"{x:,.0f}" for x in rates)
        print(f"| {key} | {rate:,.0f} | {shown} | {mfu_sheet} | {rate * fpt / measured:.1%} |")
    for suffix in ("", ", compiled"):
        on, off = rows.get(f"genlab, guard on{suffix}"), rows.get(f"genlab, guard off{suffix}")
        hand = rows.get(f"hand-written{suffix}")
        if on and off and hand:
            overhead = 1 - statistics.median(a / b for a, b in zip(on, off, strict=True))
            ratio = statistics.median(a / b for a, b in zip(on, hand, strict=True))
            print(
                f"guard overhead{suffix or ', eager'}: {overhead:.1%} (goal <= 2%); "
                f"genlab / hand-written: {ratio:.3f}"
            )
    print("goal: MFU >= 45% of the datasheet peak on an H100/H200")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="eager rounds (0: none)")
    parser.add_argument("--compiled-rounds", type=int, default=1, help="torch.compile rounds")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768, help="n_embd (heads of 64)")
    parser.add_argument("--batch", type=int, default=16, help="sequences of 1024 tokens per step")
    parser.add_argument("--no-smoke", dest="smoke", action="store_false")
    parser.add_argument("--tiny", action="store_true", help="no GPU: check the script on a CPU")
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no CUDA device here; run with --tiny to check the script on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        # The measurement first: it is what a short lease is for; the smoke test follows.
        speed(Path(tmp), args)
        if args.smoke:
            smoke(Path(tmp), ["train.device=cpu"] if args.tiny else [])


if __name__ == "__main__":
    main()
