"""What compression costs and buys, measured on genlab's own models (prints one table).

Two models, each trained once and cached (reruns reuse the checkpoints):
- a 6-layer x 384 GPT (10.8M parameters, character level, block 128) trained on CPython's
  docs long enough to have a meaningful perplexity;
- the quickstart model (examples/lm.yaml: 4 x 128, 0.8M parameters, 800 steps by default).
Each is compressed with int8 dynamic, int8 weight-only, bf16, 50% magnitude and 50% Wanda
(without and with recovery fine-tuning) and 25% structured pruning (without recovery),
through the same `genlab.compress` path users run: every number comes from the variant's
own compression.json (perplexity on held-out windows with the one likelihood implementation;
speed and memory measured by a fresh process). The issue's goals are checked in the last
column.

    .venv/bin/python benchmarks/compress.py [--steps 1200] [--recover-steps 50]
        [--windows 128] [--only big|quickstart] [--quickstart-steps 800] [--variants 0,1]

Variants compressed before with the same settings are reused (their tables also give the
original's row), so the variants can run as parallel processes and one last call prints the
whole table.

Speed depends on what else the machine runs; run it on a quiet machine (check `uptime`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

CACHE = Path(".cache") / "genlab" / "bench-compress"
BIG = [
    "data.source=python-docs",
    "data.tokenizer=char",
    "data.block_size=128",
    "data.split.test=0.05",
    "model.n_layer=6",
    "model.n_head=6",
    "model.n_embd=384",
    "optim.lr=1e-3",
    "schedule.warmup_steps=100",
    "train.batch_size=16",
    "train.eval_every=200",
    "train.eval_batches=8",
    "train.checkpoint_every=50",
    "train.sample_every=400",
    "train.progress=false",
]
QUICKSTART = ["data.split.test=0.05", "train.progress=false"]
VARIANTS = {  # name -> compress settings (recovery steps filled in from --recover-steps)
    "int8_dynamic": ["compress.quantize=int8_dynamic"],
    "int8_weight_only": ["compress.quantize=int8_weight_only"],
    "bf16": ["compress.quantize=bf16"],
    "magnitude 50%": ["compress.prune.method=magnitude", "compress.prune.sparsity=0.5"],
    "magnitude 50% + recovery": [
        "compress.prune.method=magnitude",
        "compress.prune.sparsity=0.5",
        "RECOVER",
    ],
    "wanda 50%": ["compress.prune.method=wanda", "compress.prune.sparsity=0.5"],
    "wanda 50% + recovery": [
        "compress.prune.method=wanda",
        "compress.prune.sparsity=0.5",
        "RECOVER",
    ],
    "structured 25%": ["compress.prune.method=structured", "compress.prune.sparsity=0.25"],
}


def trained(name: str, config: str | None, overrides: list[str], console: Console) -> Path:
    """A run trained once: cached under .cache/genlab/bench-compress/<name>-<hash>."""
    import genlab
    from genlab.training.checkpoint import latest

    settings = [o for o in overrides if not o.startswith("train.max_steps=")]
    key = hashlib.sha256(json.dumps([config, settings]).encode()).hexdigest()[:10]
    run = CACHE / f"{name}-{key}"
    steps = next(int(o.split("=")[1]) for o in overrides if o.startswith("train.max_steps="))
    found = latest(run / "checkpoints")
    if found is not None and found.step >= steps:
        console.print(f"reusing {run} (step {found.step})")
        return run
    if found is not None:  # interrupted, or trained for fewer steps: continue it exactly
        console.print(f"resuming the training of {name} in {run} to step {steps}")
        genlab.resume(run, [f"train.max_steps={steps}"], console=console)
        return run
    console.print(f"training {name} → {run} (cached for the next run)")
    cfg = genlab.load_config(config, overrides)
    genlab.train(cfg, run, overwrite=True, console=console)
    return run


def finished(out: Path, settings: dict) -> list[dict] | None:
    """The rows of a variant compressed before with exactly these settings (else None)."""
    table = out / "compression.json"
    if not table.is_file():
        return None
    doc = json.loads(table.read_text(encoding="utf-8"))
    return doc["rows"] if doc.get("settings") == settings else None


def measured_original(run: Path, checkpoint: Path, windows: int) -> dict | None:
    """The original's row from any variant's table measured on the same checkpoint and
    held-out windows (None when there is none yet)."""
    for table in sorted((run / "compressed").glob("bench-*/compression.json")):
        doc = json.loads(table.read_text(encoding="utf-8"))
        same = doc["source"]["checkpoint"] == str(checkpoint.resolve())
        if same and doc["settings"]["eval_windows"] == windows:
            return doc["rows"][0]
    return None


def compress_all(
    run: Path, recover: int, windows: int, console: Console, only: list[int] | None = None
) -> list[dict]:
    """The original's row, then one row per variant (each its own compressed run; one
    finished before with the same settings is reused, its table giving the original's row
    too, so variants can run as parallel processes and a last call prints them all)."""
    from genlab import config as config_mod
    from genlab.compression.run import compress_one, original_row
    from genlab.compression.subject import load_subject
    from genlab.evaluation.run import pick_checkpoint
    from genlab.track.rundir import open_existing

    common = [f"compress.eval_windows={windows}"]
    rundir = open_existing(run)
    original: dict | None = None
    rows = []
    for index, (variant, settings) in enumerate(VARIANTS.items()):
        if only is not None and index not in only:
            continue
        settings = [f"compress.recover_steps={recover}" if s == "RECOVER" else s for s in settings]
        cfg = config_mod.load(rundir.config, [*common, *settings])
        slug = "".join(c if c.isalnum() else "-" for c in variant)
        out = run / "compressed" / f"bench-{slug}"
        cached = finished(out, cfg.compress.model_dump(mode="json"))
        if cached is not None:
            console.print(f"reusing {out}")
            original = original or cached[0]
            rows.append({**cached[-1], "variant": variant})
            continue
        if original is None:
            checkpoint = pick_checkpoint(rundir, None)
            original = measured_original(run, checkpoint.path, windows)
        if original is None:
            base = config_mod.load(rundir.config, common)
            original = original_row(load_subject(run, base, checkpoint), console)
        result = compress_one(rundir, cfg, out, True, console, original)
        rows.append({**result.rows[-1], "variant": variant})
    assert original is not None, "no variant selected"
    return [{**original, "variant": "fp32 (original)"}, *rows]


def goal(variant: str, row: dict, original: dict) -> str:
    """The issue's goals for this variant, checked ('' when it has none)."""
    ppl = row["val/perplexity"] / original["val/perplexity"] - 1
    speed = row["forward_b8_tokens_per_s"] / original["forward_b8_tokens_per_s"]
    size = original["file_mb"] / row["file_mb"]
    checks = {
        "int8_dynamic": [
            (ppl <= 0.01, "ppl ≤ +1%"),
            (size >= 2, "file ≥ 2× smaller"),
            (speed >= 1.3, "fwd ≥ 1.3×"),
        ],
        "int8_weight_only": [(ppl <= 0.003, "ppl ≤ +0.3%")],
        "magnitude 50% + recovery": [(ppl <= 0.10, "ppl ≤ +10%")],
        "wanda 50% + recovery": [(ppl <= 0.10, "ppl ≤ +10%")],
        "structured 25%": [(speed >= 1.25, "fwd ≥ 1.25×")],
    }.get(variant, [])
    return ", ".join(("✓ " if ok else "✗ ") + text for ok, text in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200, help="training steps of the 6x384 GPT")
    parser.add_argument("--recover-steps", type=int, default=50)
    parser.add_argument("--windows", type=int, default=128, help="held-out windows scored")
    parser.add_argument("--only", choices=["big", "quickstart"], default=None)
    parser.add_argument(
        "--quickstart-steps", type=int, default=800, help="training steps of the quickstart"
    )
    parser.add_argument(
        "--variants",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="only these variants, by position in VARIANTS (0 int8_dynamic ... 7 structured)",
    )
    args = parser.parse_args()
    console = Console(stderr=True)
    models = {}
    if args.only in (None, "big"):
        models["GPT 6×384"] = trained(
            "gpt6x384", None, [*BIG, f"train.max_steps={args.steps}"], console
        )
    if args.only in (None, "quickstart"):
        models["quickstart"] = trained(
            "quickstart",
            "examples/lm.yaml",
            [*QUICKSTART, f"train.max_steps={args.quickstart_steps}"],
            console,
        )
    table = Table(title=f"genlab compress on {os.cpu_count()} CPU cores", title_justify="left")
    columns = [
        "model", "variant", "params", "non-zero", "file MB", "fwd b1 tok/s", "fwd b8 tok/s",
        "gen tok/s", "ppl val", "Δppl", "bpb val", "goal",
    ]  # fmt: skip
    for c in columns:
        table.add_column(c, justify="left" if c in ("model", "variant", "goal") else "right")
    for model, run in models.items():
        rows = compress_all(run, args.recover_steps, args.windows, console, args.variants)
        original = rows[0]
        for row in rows:
            delta = row["val/perplexity"] / original["val/perplexity"] - 1
            table.add_row(
                model,
                row["variant"],
                f"{row['params']:,}",
                f"{row['nonzero_params']:,}",
                f"{row['file_mb']:.2f}",
                f"{row['forward_b1_tokens_per_s']:,.0f}",
                f"{row['forward_b8_tokens_per_s']:,.0f}",
                f"{row['generate_tokens_per_s']:,.0f}",
                f"{row['val/perplexity']:.3f}",
                "" if row is original else f"{delta:+.2%}",
                f"{row['val/bits_per_byte']:.3f}",
                "" if row is original else goal(row["variant"], row, original),
            )
    Console(width=220).print(table)
    print(f"threads per measurement: {rows[0].get('threads')}", file=sys.stderr)


if __name__ == "__main__":
    main()
