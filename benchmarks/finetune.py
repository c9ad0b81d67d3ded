"""Fine-tuning methods compared: what each one gains on new data and forgets of the old.

Pretrains the quickstart GPT on CPython's docs (python-docs), then adapts it to scikit-learn's
dataset descriptions (sklearn-docs) with each method in examples/finetune-lm.yaml's settings:
full fine-tuning, freezing the embeddings and the bottom blocks, and LoRA; plus a model trained
from scratch on the new data with the same step budget. Each run is its own process, so its
peak memory (max RSS) is its own. Goals: fine-tuning beats from-scratch on the new data, and
LoRA and freezing forget less than full fine-tuning.

    .venv/bin/python benchmarks/finetune.py [--pretrain-steps 800] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUNNER = (
    "import resource, sys; from genlab.cli import main; code = main(sys.argv[1:]); "
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)


def genlab_train(config: str, run_dir: Path, *overrides: str) -> dict:
    """Run `genlab train` in a fresh process; returns its final metrics, steps/s, peak MB."""
    cmd = [sys.executable, "-c", RUNNER, "train", config, *overrides, "--run-dir", str(run_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rss_kb = int(out.stdout.split("MAXRSS_KB")[1].split()[0])
    final = json.loads((run_dir / "metrics.json").read_text())
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if r["step"] > 0]
    first = lines[0]
    if "params/trainable" not in first:  # not a fine-tune: every weight trains
        from safetensors.torch import load_file

        weights = load_file(
            str(sorted((run_dir / "checkpoints").glob("step-*"))[-1] / "model.safetensors")
        )
        n = sum(t.numel() for t in weights.values())
        first = {"params/trainable": n, "params/total": n}
    seconds = steps[-1]["time"] - steps[0]["time"]
    return {
        "final": final,
        "steps_per_s": (len(steps) - 1) / seconds,
        "peak_mb": rss_kb / 1024,
        "trainable": first.get("params/trainable"),
        "total": first.get("params/total"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    quiet = ["train.progress=false"]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        pre = tmp / "pretrained"
        genlab_train("examples/lm.yaml", pre, *quiet, f"train.max_steps={args.pretrain_steps}")
        common = [*quiet, f"finetune.init_from={pre}", f"train.max_steps={args.steps}"]
        runs = {
            "full": genlab_train(
                "examples/finetune-lm.yaml", tmp / "full", *common, "finetune.method=full"
            ),
            "freeze (emb + 2 blocks)": genlab_train(
                "examples/finetune-lm.yaml",
                tmp / "freeze",
                *common,
                "finetune.method=freeze",
                "finetune.freeze_blocks=2",
            ),
            "lora (r=8)": genlab_train(
                "examples/finetune-lm.yaml", tmp / "lora", *common, "finetune.method=lora"
            ),
        }
        # From scratch on the new data, same budget; its tokenizer is the pretrained one's
        # alphabet only by accident, so compare losses per character (same char tokenizer).
        scratch = genlab_train(
            "examples/finetune-lm.yaml",
            tmp / "scratch",
            *quiet,
            "finetune.init_from=null",
            "finetune.method=full",
            f"train.max_steps={args.steps}",
            "optim.lr=2e-3",
            "schedule.warmup_steps=50",
        )
    print(
        f"\nfine-tuning — pretrain {args.pretrain_steps} steps on python-docs, then "
        f"{args.steps} steps on sklearn-docs (val loss in nats/char; lower is better)"
    )
    head = (
        f"{'method':<24}{'trainable':>12}{'steps/s':>9}{'peak MB':>9}"
        f"{'val new':>9}{'new before':>11}{'val orig':>10}{'orig before':>12}{'forgot':>8}"
    )
    print(head)
    for name, r in runs.items():
        f = r["final"]
        print(
            f"{name:<24}{r['trainable']:>12,}{r['steps_per_s']:>9.1f}{r['peak_mb']:>9.0f}"
            f"{f['val/loss']:>9.4f}{f['finetune/val_loss_before']:>11.4f}"
            f"{f['val_original/loss']:>10.4f}{f['finetune/val_original_loss_before']:>12.4f}"
            f"{f['finetune/forgetting']:>+8.4f}"
        )
    s = scratch["final"]
    print(
        f"{'from scratch':<24}{scratch['trainable']:>12,}{scratch['steps_per_s']:>9.1f}"
        f"{scratch['peak_mb']:>9.0f}{s['val/loss']:>9.4f}{'-':>11}{'-':>10}{'-':>12}{'-':>8}"
    )
    best_ft = min(r["final"]["val/loss"] for r in runs.values())
    forgets = {n: r["final"]["finetune/forgetting"] for n, r in runs.items()}
    print(
        f"fine-tuning beats scratch on new data: {best_ft < s['val/loss']}; "
        f"LoRA/freeze forget less than full: "
        f"{all(v < forgets['full'] for k, v in forgets.items() if k != 'full')}"
    )


if __name__ == "__main__":
    main()
