"""Benchmark: how fast the evaluation metrics run on CPU.

Rows:
- feature extractor: images/s through the digits feature CNN (`evaluate.features`), on the
  sklearn 8x8 digits tiled to `--images` images (the CNN is trained once into a temp cache;
  throughput does not depend on its weights, but this is the network FID/KID really use).
- FID / KID: seconds on `--samples` x 64-dim Gaussian features per side (`evaluate.image`;
  KID with its defaults, 100 subsets of 1000).
- perplexity: tokens/s of the token-level NLL pass over every window of the val split, for
  the tiny test GPT (1 layer, 32 wide, block 32) after 20 training steps; once the bare
  forward pass (`likelihood_metrics`), once the whole `evaluate_run` (config, checkpoint,
  documents, tokenizer included).

Each timing is the best of `--repeats`. Runs on `--threads` intra-op threads (default 1: the
ops are small, and on a busy 2-core machine two threads made them up to 10x slower).

Run: .venv/bin/python benchmarks/eval_speed.py [--images 20000] [--samples 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from genlab.data.lm import DOC_SEPARATOR
from genlab.evaluation.features import digits_dataset, load_or_train_feature_classifier
from genlab.evaluation.image import fid, kid
from genlab.evaluation.run import (
    evaluate_run,
    held_out_documents,
    likelihood_metrics,
    load_run_model,
)
from genlab.training.loop import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from testkit import tiny_config  # the same tiny model the tests use


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fastest wall time of `repeats` calls, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)

        # Feature extractor throughput.
        x_tr, y_tr, x_te, y_te = digits_dataset()
        fc = load_or_train_feature_classifier(x_tr, y_tr, x_te, y_te, tmp_path / "cache")
        reps = -(-args.images // x_tr.shape[0])
        images = x_tr.repeat(reps, 1, 1, 1)[: args.images]
        secs, feats = best_of(lambda: fc.features(images), args.repeats)
        rows.append(
            (
                "feature CNN (digits 8x8)",
                f"{args.images / secs:,.0f} images/s",
                f"{args.images:,} images -> {tuple(feats.shape)}, {secs:.3f} s",
            )
        )

        # FID and KID on Gaussian features (fake shifted so the distance is not ~0).
        gen = torch.Generator().manual_seed(0)
        real = torch.randn(args.samples, 64, generator=gen)
        fake = torch.randn(args.samples, 64, generator=gen) * 1.1 + 0.1
        secs, value = best_of(lambda: fid(real, fake), args.repeats)
        rows.append(
            ("FID", f"{secs:.3f} s", f"{args.samples:,} vs {args.samples:,} x 64, = {value:.4f}")
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            secs, (mean, std) = best_of(lambda: kid(real, fake), args.repeats)
        rows.append(("KID", f"{secs:.3f} s", f"100 subsets of 1000, = {mean:.5f} ± {std:.5f}"))

        # Perplexity on the tiny GPT.
        run_dir = tmp_path / "run"
        train(tiny_config("train.max_steps=20"), run_dir, console=Console(quiet=True))
        loaded = load_run_model(run_dir)
        text = DOC_SEPARATOR.join(d.text for d in held_out_documents(loaded.cfg))
        secs, res = best_of(lambda: likelihood_metrics(loaded, text, "val"), args.repeats)
        n = res["nll"].n
        rows.append(
            ("perplexity, forward pass", f"{n / secs:,.0f} tokens/s", f"{n:,} tokens, {secs:.3f} s")
        )
        secs, res = best_of(
            lambda: evaluate_run(run_dir, metrics="perplexity", write=False), args.repeats
        )
        rows.append(
            (
                "perplexity, whole evaluate_run",
                f"{n / secs:,.0f} tokens/s",
                f"{n:,} tokens, {secs:.3f} s (load + data + pass)",
            )
        )

    table = Table(
        title=f"evaluation speed (CPU, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__})"
    )
    for col in ("what", "speed", "details"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
