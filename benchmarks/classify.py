"""Transfer learning to a downstream task: does a pretrained generative model make a better
classifier than training from scratch at the same step budget, and by how much?

Text: standard-library docstrings by topic (stdlib-topics, 9 unbalanced topics) with
examples/classify-topics.yaml: a GPT trained from scratch vs the quickstart language model
(examples/lm.yaml) as the backbone with `freeze` (embeddings + 2 blocks), `lora` and `full`.
Digits: the encoder of a conv VAE trained on the digits (without labels) as the backbone,
frozen or fine-tuned, vs the same CNN from scratch, with 10% and 100% of the train labels;
the VAE of each seed sees only that seed's train split, as the classifiers do. Every number
is macro-F1 on the held-out test split (`genlab eval --split test`), mean ± std over the
seeds (which also change the split), with the trainable parameters and the training time
(from the run's own log: data loading and evaluation excluded).

    .venv/bin/python benchmarks/classify.py [--pretrained runs/quickstart] [--seeds 3]
        [--pretrain-steps 800] [--steps 60] [--block-size 64] [--vae-steps 400]
        [--digits-steps 200] [--fractions 0.1,1.0] [--skip text|digits] [--text-methods 0,1]

The defaults take about 15 minutes on 2 idle CPU cores (the pretraining about 3 of them;
--pretrained reuses a quickstart run). A load average above 2.5 is reported: timings are
then taken under contention (the F1 numbers are unaffected).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

import genlab

QUIET = Console(quiet=True)
COMMON = ["train.progress=false"]


def train_and_score(config: str, run_dir: Path, overrides: list[str]) -> dict:
    """Train, then score the test split; macro-F1, accuracy, trainable params, train time."""
    genlab.train(config, run_dir, [*COMMON, *overrides], overwrite=True, console=QUIET)
    scores = genlab.evaluate(run_dir, split="test", console=QUIET)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = lines[0]
    if "params/trainable" not in first:  # not a fine-tune: every weight trains
        from safetensors import safe_open

        last = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))
        with safe_open(str(last[-1] / "model.safetensors"), framework="pt") as f:
            names = f.keys()  # a safetensors file is not iterable itself
            count = sum(math.prod(f.get_slice(k).get_shape()) for k in names)
        first = {"params/trainable": count}
    trained = [r for r in lines if r["step"] > 0]
    return {
        "f1": scores["f1_macro"].value,
        "accuracy": scores["accuracy"].value,
        "majority_f1": scores["baseline/majority_f1_macro"].value,
        "chance_f1": scores["baseline/chance_f1_macro"].value,
        "trainable": first["params/trainable"],
        "seconds": trained[-1]["time"],
        "n_test": scores["accuracy"].n,
    }


def summarise(name: str, data: str, labels: str, runs: list[dict]) -> dict:
    f1 = [r["f1"] for r in runs]
    return {
        "name": name,
        "data": data,
        "labels": labels,
        "f1": statistics.mean(f1),
        "std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
        "accuracy": statistics.mean(r["accuracy"] for r in runs),
        "trainable": runs[0]["trainable"],
        "seconds": statistics.mean(r["seconds"] for r in runs),
        "runs": runs,
    }


def text_rows(tmp: Path, args: argparse.Namespace, seeds: list[int]) -> list[dict]:
    pretrained = args.pretrained
    if pretrained is None:
        pretrained = tmp / "quickstart"
        steps = f"train.max_steps={args.pretrain_steps}"
        genlab.train("examples/lm.yaml", pretrained, [*COMMON, steps], console=QUIET)
    config = "examples/classify-topics.yaml"
    budget = [f"train.max_steps={args.steps}", f"train.checkpoint_every={args.steps}"]
    budget += [f"data.block_size={args.block_size}"]
    methods = {
        "GPT from scratch": [
            "finetune.init_from=null", "finetune.method=full", "finetune.freeze_blocks=0",
        ],
        "quickstart LM, freeze (emb + 2 blocks)": [f"finetune.init_from={pretrained}"],
        "quickstart LM, lora (r=8)": [
            f"finetune.init_from={pretrained}", "finetune.method=lora",
            "finetune.freeze_blocks=0",
        ],
        "quickstart LM, full": [
            f"finetune.init_from={pretrained}", "finetune.method=full",
            "finetune.freeze_blocks=0", "optim.lr=5e-4",
        ],
    }  # fmt: skip
    rows = []
    for index, (name, extra) in enumerate(methods.items()):
        if args.text_methods is not None and index not in args.text_methods:
            continue
        runs = [
            train_and_score(config, tmp / f"text-{index}-{s}", [*budget, *extra, f"seed={s}"])
            for s in seeds
        ]
        rows.append(summarise(name, "stdlib-topics", "100%", runs))
    return rows


def digits_rows(tmp: Path, args: argparse.Namespace, seeds: list[int]) -> list[dict]:
    config = "examples/classify-digits.yaml"
    cnn = ["model.vae.arch=conv", "model.vae.base_channels=32"]
    vaes = {}
    for s in seeds:  # one VAE per seed: it never sees that seed's val/test images
        vaes[s] = tmp / f"vae-{s}"
        genlab.train(
            "examples/digits-vae.yaml",
            vaes[s],
            [*COMMON, *cnn, "data.split.test=0.1", f"seed={s}",
             f"train.max_steps={args.vae_steps}", f"train.checkpoint_every={args.vae_steps}"],
            console=QUIET,
        )  # fmt: skip
    budget = [f"train.max_steps={args.digits_steps}", f"train.checkpoint_every={args.digits_steps}"]
    methods = {
        "CNN from scratch": lambda s: ["finetune.init_from=null", "finetune.method=full", *cnn],
        "VAE encoder, frozen": lambda s: [
            f"finetune.init_from={vaes[s]}", "finetune.method=freeze",
        ],
        "VAE encoder, fine-tuned": lambda s: [f"finetune.init_from={vaes[s]}"],
    }  # fmt: skip
    rows = []
    for fraction in args.fractions:
        for name, extra in methods.items():
            label = f"classify.label_fraction={fraction}"
            runs = [
                train_and_score(config, tmp / f"digits-{len(rows)}-{s}",
                                [*budget, *extra(s), label, f"seed={s}"])
                for s in seeds
            ]  # fmt: skip
            rows.append(summarise(name, "digits", f"{fraction:.0%}", runs))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", type=Path, default=None, help="a quickstart run to reuse")
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--steps", type=int, default=60, help="text classifier steps")
    parser.add_argument("--block-size", type=int, default=64, help="tokens read per docstring")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--digits-steps", type=int, default=200)
    parser.add_argument("--fractions", type=lambda s: [float(x) for x in s.split(",")],
                        default=[0.1, 1.0])  # fmt: skip
    parser.add_argument("--skip", choices=["text", "digits"], default=None)
    parser.add_argument(
        "--text-methods",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="only these text rows, by position (0 scratch, 1 freeze, 2 lora, 3 full), e.g. to "
        "run them as parallel processes on a busy machine",
    )
    args = parser.parse_args()
    seeds = [1337 + i for i in range(args.seeds)]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        rows = [] if args.skip == "text" else text_rows(tmp, args, seeds)
        rows += [] if args.skip == "digits" else digits_rows(tmp, args, seeds)
    load_after = os.getloadavg()[0]
    parts = []
    if args.skip != "text":
        first = rows[0]["runs"][0]
        parts.append(
            f"text: {args.steps} steps of {args.block_size} tokens on stdlib-topics "
            f"({first['n_test']} test docstrings; majority baseline {first['majority_f1']:.3f}, "
            f"chance {first['chance_f1']:.3f})"
        )
    if args.skip != "digits":
        parts.append(f"digits: {args.digits_steps} steps, VAE pretrained {args.vae_steps} steps")
    print(
        f"\nclassify — macro-F1 on the test split, mean ± std over {args.seeds} seeds; "
        + "; ".join(parts)
    )
    print(f"| {'backbone / method':<40} | {'data':<13} | labels | {'test macro-F1':>15} | "
          f"{'accuracy':>8} | {'trainable':>9} | {'time s':>6} |")  # fmt: skip
    print(f"| {'-' * 40} | {'-' * 13} | -----: | {'-' * 14}: | {'-' * 7}: | {'-' * 8}: | "
          f"{'-' * 5}: |")  # fmt: skip
    for r in rows:
        print(
            f"| {r['name']:<40} | {r['data']:<13} | {r['labels']:>6} | "
            f"{r['f1']:>7.3f} ± {r['std']:.3f} | {r['accuracy']:>8.3f} | {r['trainable']:>9,} | "
            f"{r['seconds']:>6.1f} |"
        )
    loaded = max(load_before, load_after)
    note = " — timings taken under contention" if loaded > 2.5 else ""
    print(
        f"load average {load_before:.1f} → {load_after:.1f}{note}; "
        f"{(time.perf_counter() - started) / 60:.1f} minutes in all"
    )


if __name__ == "__main__":
    main()
