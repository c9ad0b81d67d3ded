"""Benchmark: sampling speed with and without the key/value cache.

Models (random weights: speed does not depend on them): the quickstart GPT (4 x 128, block
128, char vocabulary 100), the 6 x 384 GPT of the precision and compression benchmarks
(block 256, vocabulary 4096) and a GPT-2-small-shaped Hugging Face model (12 x 768, block
1024, vocabulary 50257; built from a config, nothing downloaded). Each samples `--tokens`
new tokens (temperature 0.8, top-k 50, batch 1) after a one-token prompt, once through
`sample_tokens` with the model (cached while the sequence fits the window) and once through
the model as a plain callable (the whole context recomputed every token, as before the
cache). Both draw the same tokens (checked). Best of `--repeats`, `--threads` threads.

Run: .venv/bin/python benchmarks/generate_speed.py [--tokens 200] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch

from genlab.config import ModelConfig
from genlab.models.gpt import GPT, sample_tokens


class WholeContext:
    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)


def gpt(n_layer: int, n_head: int, n_embd: int, vocab: int, block: int) -> tuple[GPT, int]:
    config = ModelConfig(family="gpt", n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    return GPT(config, vocab, block).eval(), block


def gpt2_small() -> tuple[torch.nn.Module, int]:
    from genlab.models.hf import HFCausalLM, transformers_offline

    transformers = transformers_offline()
    config = transformers.GPT2Config()  # 12 x 768, 1024 positions, 50257 tokens
    return HFCausalLM(transformers.GPT2LMHeadModel(config).eval()), 1024


def sample(model: Callable, prompt: torch.Tensor, block: int, tokens: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return sample_tokens(model, prompt, block, tokens, 0.8, 50, None, generator=g)


def best_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {
        "quickstart GPT 4x128, block 128": lambda: gpt(4, 4, 128, 100, 128),
        "GPT 6x384, block 256": lambda: gpt(6, 6, 384, 4096, 256),
        "HF GPT-2 small shape, block 1024": gpt2_small,
    }
    print(f"sampling {args.tokens} tokens, batch 1, {args.threads} threads, best of "
          f"{args.repeats}")  # fmt: skip
    print("| model | cached tokens/s | whole context tokens/s | speed-up | same tokens |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, build in models.items():
        model, block = build()
        prompt = torch.zeros(1, 1, dtype=torch.long)
        rows = []
        with torch.no_grad():
            for m in (model, WholeContext(model)):
                run = functools.partial(sample, m, prompt, block, args.tokens)
                rows.append(best_seconds(run, args.repeats))
        (cached, a), (whole, b) = rows
        print(f"| {name} | {args.tokens / cached:,.0f} | {args.tokens / whole:,.0f} | "
              f"{whole / cached:.2f}x | {'yes' if torch.equal(a, b) else 'NO'} |")  # fmt: skip


if __name__ == "__main__":
    main()
