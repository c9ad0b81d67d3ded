"""Export parity and cost on a real-sized model: the quickstart GPT (4 layers, width 128,
context 128) trained on CPython's docs with each tokenizer kind, exported to every format.

Prints one table: per run and format, the file size, the export's wall time (parity checks
included), max |Δlogit| against the genlab model on held-out windows, whether greedy text from
5 held-out prompts is identical, the perplexity change (GGUF) and whether every goal in
export.json was met. Goals: hf ≤ 1e-4 and identical greedy text; onnx ≤ 1e-4 at two lengths;
gguf F16 ≤ 1e-2, Q8_0 perplexity within +0.5%.

    .venv/bin/python benchmarks/export.py [--steps 400] [--tokenizers char,byte,bpe]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import genlab

FORMATS = [("hf", None), ("onnx", None), ("gguf", "f32"), ("gguf", "f16"), ("gguf", "q8_0")]


def row(kind: str, label: str, seconds: float, record: dict) -> str:
    parity = record["parity"]
    size = sum(f["bytes"] for f in record["files"] if f["path"] != "README.md") / 2**20
    diff = parity["max_abs_logit_diff"]
    if isinstance(diff, dict):  # onnx: one per sequence length
        diff = max(diff.values())
    ppl = parity.get("perplexity", {}).get("relative_change")
    ppl_text = f"{ppl:+.3%}" if ppl is not None else "–"
    greedy = parity["greedy"]
    same = f"{greedy['identical_prompts']}/{greedy['prompts']}"
    ok = "yes" if parity["ok"] else "NO"
    cells = [kind, label, f"{size:.2f}", f"{seconds:.1f}", f"{diff:.2e}", same, ppl_text, ok]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--tokenizers", default="char,byte,bpe")
    args = parser.parse_args()
    lines = [
        "| tokenizer | format | MB | export s | max abs Δlogit | greedy same | Δppl | goals |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.tokenizers.split(","):
            run = Path(tmp) / kind
            overrides = [f"train.max_steps={args.steps}", "train.progress=false"]
            overrides += [f"data.tokenizer={kind}", "train.eval_every=100000"]
            if kind == "bpe":
                overrides.append("data.vocab_size=2048")
            genlab.train("examples/lm.yaml", run, overrides)
            for fmt, gguf_type in FORMATS:
                start = time.perf_counter()
                out = Path(tmp) / f"{kind}-{fmt}-{gguf_type}"
                result = genlab.export(run, fmt, out, gguf_type=gguf_type)
                label = fmt if gguf_type is None else f"{fmt} {gguf_type}"
                lines.append(row(kind, label, time.perf_counter() - start, result.record))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
