"""Train the two image examples and copy their final sample grids into docs/images/.

    examples/digits-vae.yaml -> docs/images/digits-vae.png   (64 samples from the prior)
    examples/digits-gan.yaml -> docs/images/digits-gan.png   (64 samples, EMA generator)

Prints one table per run: wall time, guard events, the final validation metrics, and sample
quality measured with the digits feature CNN (`evaluate.features`, the network FID/KID use):
FID of 1,000 samples against the held-out digits (with the FID of real train digits against
the same held-out digits as the floor), and the classifier's mean top-class confidence and
class-histogram entropy (1 = all ten digits equally often; a collapsed GAN is near 0).

Runs on `--threads` intra-op threads (default 1: these models are tiny; on an idle 2-core
machine one thread is as fast as two, on a busy one two threads were up to 7x slower).

Run: .venv/bin/python benchmarks/make_readme_images.py [--runs-dir runs] [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from genlab import config as config_mod
from genlab.evaluation.features import digits_dataset, load_or_train_feature_classifier
from genlab.evaluation.image import fid
from genlab.training import checkpoint as ckpt
from genlab.training.build import build_family
from genlab.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("vae", "gan")
N_SAMPLES = 1000


@torch.no_grad()
def sample_pixels(run_dir: Path, n: int, seed: int = 0) -> torch.Tensor:
    """n samples (n, C, H, W) in [0, 1] from a finished run's last checkpoint."""
    cfg = config_mod.load(run_dir / "config.yaml")
    family = build_family(cfg, torch.device("cpu"), nullcontext(), run_dir)
    info = ckpt.latest(run_dir / "checkpoints")
    ckpt.load_checkpoint(info.path, family.modules)
    g = torch.Generator().manual_seed(seed)
    if cfg.model.family == "gan":
        x = family.gan.sample(n, g, ema=family.ema)
    else:
        family.model.eval()
        x = family.model.sample(n, generator=g)
    return family.batches.to_pixels(x)


def class_entropy(probs: torch.Tensor) -> float:
    """Entropy of the predicted-class histogram, normalised to [0, 1]."""
    k = probs.shape[1]
    hist = torch.bincount(probs.argmax(1), minlength=k).double() / probs.shape[0]
    nz = hist[hist > 0]
    return float(-(nz * nz.log()).sum() / math.log(k))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=150)
    args.out.mkdir(parents=True, exist_ok=True)

    x_tr, y_tr, x_te, y_te = digits_dataset()
    with tempfile.TemporaryDirectory() as cache:
        clf = load_or_train_feature_classifier(x_tr, y_tr, x_te, y_te, Path(cache))
    real_te = clf.features(x_te)
    floor = fid(clf.features(x_tr), real_te)

    table = Table(title=f"digits examples ({args.threads} thread(s))")
    for col in ("example", "steps", "wall s", "guard events", "val metrics", "FID", "conf", "H"):
        table.add_column(col)
    for fam in FAMILIES:
        cfg_path = ROOT / "examples" / f"digits-{fam}.yaml"
        cfg = config_mod.load(cfg_path, ["train.progress=false"])
        run_dir = args.runs_dir / f"digits-{fam}"
        t0 = time.perf_counter()
        result = train(cfg, run_dir, overwrite=True, console=console)
        wall = time.perf_counter() - t0
        grid = run_dir / "samples" / f"step-{result.step}.png"
        shutil.copyfile(grid, args.out / f"digits-{fam}.png")
        events = [
            json.loads(line)
            for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        samples = sample_pixels(run_dir, N_SAMPLES)
        probs = clf.probs(samples)
        table.add_row(
            fam,
            str(result.step),
            f"{wall:.0f}",
            str(len(events)) + (f" {sorted({e['kind'] for e in events})}" if events else ""),
            ", ".join(f"{k} {v:.3f}" for k, v in result.final_metrics.items()),
            f"{fid(clf.features(samples), real_te):.1f}",
            f"{float(probs.max(1).values.mean()):.3f}",
            f"{class_entropy(probs):.3f}",
        )
    real_probs = clf.probs(x_te)
    table.add_row(
        "real digits",
        "",
        "",
        "",
        f"feature CNN test accuracy {clf.test_accuracy:.3f}",
        f"{floor:.1f}",
        f"{float(real_probs.max(1).values.mean()):.3f}",
        f"{class_entropy(real_probs):.3f}",
    )
    console.print(table)
    console.print(f"grids: {args.out / 'digits-vae.png'}, {args.out / 'digits-gan.png'}")


if __name__ == "__main__":
    main()
