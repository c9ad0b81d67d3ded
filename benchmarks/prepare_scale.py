"""Benchmark: `genlab data prepare` at scale — wall time, throughput and peak memory.

Corpus: generated JSONL (or `--format csv`: CSV, one quoted `text` column; `--format txt`:
plain text, one paragraph per document; `--format hf`: the JSONL saved as a Hugging Face
dataset) of `--sizes` MB each (default 50 200 1000). Documents are 30-70 sentences drawn
from a pool of 200,000 sentences of English-like words (the word frequencies of CPython's
`pydoc_data.topics`), about 4 KB each; 4% get an exact copy (upper-cased) and 4% a near copy
(one sentence replaced) somewhere later in the file. Preparation runs as a fresh `genlab
data prepare` process with a byte-level BPE tokenizer (vocab 4096), exact + near dedup and
val/test splits, on `--workers` worker processes; memory is the peak resident set of the
whole process tree (driver + workers), sampled every 0.1 s with psutil, and of the largest
single process (ru_maxrss); CPU seconds are the whole tree's; the stage columns are the
build's own clock (report.json "seconds"). The corpus and the prepared dataset are deleted
after each size, so disk use stays about 3x the largest size.

Run: .venv/bin/python benchmarks/prepare_scale.py [--sizes 50 200 1000] [--workers 2]
    [--format jsonl|csv|txt|hf]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

POOL = 200_000


def sentence_pool(seed: int) -> list[str]:
    from pydoc_data.topics import topics

    counts = Counter(w.lower() for t in topics.values() for w in re.findall(r"[A-Za-z]+", t))
    words, weights = zip(*counts.items())
    # Cumulative weights once: `choices(weights=...)` would sum them again on every call
    # (the same draws, ~100x slower for 200,000 sentences).
    cumulative = list(itertools.accumulate(weights))
    rng = random.Random(seed)
    pool = []
    for _ in range(POOL):
        body = " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(8, 18)))
        pool.append(body[0].upper() + body[1:] + ".")
    return pool


def write_corpus(path: Path, megabytes: int, pool: list[str], seed: int) -> int:
    """Write ~`megabytes` MB of JSONL (for a .csv path: CSV with a `text` column; .txt:
    plain text, a blank line after each document); return the number of records."""
    rng = random.Random(seed)
    target, written, records = megabytes * 1_000_000, 0, 0
    later: list[str] = []  # planted copies, written a little later
    fmt = path.suffix[1:]
    with open(path, "w", encoding="utf-8", newline="") as f:
        if fmt == "csv":
            f.write("text\n")
        while written < target:
            sentences = rng.choices(pool, k=rng.randint(30, 70))
            text = " ".join(sentences)
            lines = [text]
            roll = rng.random()
            if roll < 0.04:
                later.append(text.upper())
            elif roll < 0.08:
                sentences[rng.randrange(len(sentences))] = rng.choice(pool)
                later.append(" ".join(sentences))
            if later and rng.random() < 0.1:
                lines.append(later.pop(0))
            for body in lines:
                if fmt == "csv":
                    line = _csv_line(body)
                elif fmt == "txt":
                    line = body + "\n\n"  # one paragraph per document
                else:
                    line = json.dumps({"text": body}) + "\n"
                f.write(line)
                written += len(line)
                records += 1
    return records


def save_hf_dataset(jsonl: Path, out: Path, cache: Path) -> None:
    """The JSONL corpus as a Hugging Face dataset saved with `save_to_disk` (rows read a
    batch at a time through the library's JSON builder, cached under `cache`)."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(jsonl), split="train",
                               cache_dir=str(cache))  # fmt: skip
    ds.save_to_disk(str(out))
    del ds
    shutil.rmtree(cache, ignore_errors=True)


def _csv_line(text: str) -> str:
    """One CSV record: the text quoted, its quotes doubled (csv.writer's minimal quoting
    would leave most cells bare; quoting all makes the reader's work the same for each)."""
    return '"' + text.replace('"', '""') + '"\n'


def run_prepare(config: Path, out: Path, workers: int) -> tuple[float, float, float, float]:
    """(seconds, peak tree RSS MB, driver peak RSS MB, CPU seconds of the process tree)."""
    genlab = str(Path(sys.executable).with_name("genlab"))
    cmd = [genlab, "data", "prepare", str(config), f"data.workers={workers}", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0.0]
    driver = psutil.Process(proc.pid)

    def sample() -> None:
        while proc.poll() is None:
            try:
                tree = [driver, *driver.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"genlab data prepare failed:\n{stderr.decode()[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return seconds, peak[0], after.ru_maxrss / 1024, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", help="where to write corpora (default: a temp dir)")
    parser.add_argument(
        "--format",
        choices=["jsonl", "csv", "txt", "hf"],
        default="jsonl",
        help="csv: one `text` column; txt: one paragraph per document; hf: a saved "
        "Hugging Face dataset",
    )
    args = parser.parse_args()
    pool = sentence_pool(args.seed)
    root = Path(args.dir or tempfile.mkdtemp(prefix="genlab-prepare-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        corpus = root / f"corpus-{size}mb.{args.format}"  # hf: a directory
        if args.format == "hf":  # the JSONL corpus, saved as a Hugging Face dataset
            jsonl = root / f"corpus-{size}mb.jsonl"
            write_corpus(jsonl, size, pool, args.seed + size)
            mb_text = jsonl.stat().st_size / 1e6
            save_hf_dataset(jsonl, corpus, root / "hf-cache")
            jsonl.unlink()
        else:
            write_corpus(corpus, size, pool, args.seed + size)
            mb_text = corpus.stat().st_size / 1e6
        config = root / "prepare.yaml"
        config.write_text(
            f"data:\n  source: {corpus}\n  tokenizer: bpe\n  vocab_size: 4096\n"
            "  dedup: {exact: true, near: true}\n  split: {val: 0.05, test: 0.05}\n"
        )
        out = root / f"dataset-{size}mb"
        load_before = os.getloadavg()[0]
        seconds, tree_mb, driver_mb, cpu = run_prepare(config, out, args.workers)
        manifest = json.loads((out / "manifest.json").read_text())
        kept = sum(s["documents"] for s in manifest["splits"].values())
        mb = mb_text  # of the JSONL for hf: the dataset's own files differ in size
        # The build's own stage clock; "other" is the rest of the wall time: start-up
        # (imports, workers), the cache key, the split decision and the report.
        stages = json.loads((out / "report.json").read_text())["seconds"]
        scan, learn, tokenize = stages["scan"], stages["tokenizer"], stages["tokenize"]
        rows.append((mb, kept, seconds, mb / seconds, cpu, args.workers * mb / cpu, tree_mb,
                     driver_mb, scan, learn, tokenize, seconds - scan - learn - tokenize,
                     load_before, os.getloadavg()[0]))  # fmt: skip
        shutil.rmtree(out)
        shutil.rmtree(corpus) if corpus.is_dir() else corpus.unlink()
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    # CPU seconds make a busy machine's numbers comparable: workers x MB / CPU-s is the
    # throughput the same work would reach with `workers` idle cores (perfect overlap).
    head = ("MB of text", "kept", "wall s", "MB/s wall", "CPU s", "MB/s on idle cores",
            "peak RSS tree MB", "peak RSS largest process MB", "scan s", "BPE learning s",
            "tokenize s", "other s", "load before", "load after")  # fmt: skip
    print(f"genlab data prepare, {args.format}, bpe 4096, exact + near dedup, "
          f"{args.workers} workers, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]:.0f} | {r[1]:,} | {r[2]:.1f} | {r[3]:.2f} | {r[4]:.1f} | {r[5]:.2f} | "
              f"{r[6]:.0f} | {r[7]:.0f} | {r[8]:.1f} | {r[9]:.1f} | {r[10]:.1f} | {r[11]:.1f} | "
              f"{r[12]:.1f} | {r[13]:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
