"""Speed and memory of a run's model, measured in a fresh process (the table's latency and
memory columns). `genlab compress` runs

    python -m genlab.compression.measure RUN_DIR

for the original and for the compressed run: each loads its model through the normal path
(`load_run_model`, or the image family + checkpoint), exactly as `genlab eval` would, and
prints one JSON line:

- LMs: forward tokens/s at batch 1 and batch 8 (windows of data.block_size tokens) and greedy
  generate tokens/s (batch 1); image models: samples/s (a batch of 64 from the prior / noise);
- `weights_mb`: bytes of the tensors the loaded model holds (int8 layers count their int8
  values and scales);
- `peak_mb`: the process's peak RSS minus its RSS before the model was built. genlab's load
  path builds the original architecture in fp32 first and then reshapes/quantizes it, so a
  compressed model's peak includes that transient: `weights_mb` is its steady size.

Each speed is the median of several timed calls after a warm-up. Speed is measured here, in
`genlab compress` and benchmarks, never in tests.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from genlab.compression.storage import FORMAT, read_record
from genlab.training import checkpoint as ckpt

SAMPLE_BATCH = 64
GENERATE_TOKENS = 32


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss
    over exec, so a child of a large process would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, packing, first-call dispatch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def weights_bytes_in_memory(model: nn.Module, quantized: dict[str, str]) -> int:
    """Bytes of the tensors `model` holds; quantized layers count what their quantizer
    stores (the same int8 values and scales live in memory), tied tensors once."""
    from genlab.compression.quantize import QUANTIZERS

    seen: set[int] = set()
    total = 0
    skip = tuple(f"{n}." for n in quantized)
    for name, kind in quantized.items():
        total += sum(
            t.numel() * t.element_size()
            for t in QUANTIZERS[kind].pack(model.get_submodule(name)).values()
        )
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if name.startswith(skip) or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def measure_run(run_dir: Path, repeats: int = 5) -> dict[str, float]:
    """Load `run_dir`'s model (LoRA merged, as compress starts from it) and time it."""
    from genlab import config as config_mod
    from genlab.evaluation.run import pick_checkpoint
    from genlab.track.rundir import open_existing

    run = open_existing(run_dir)
    cfg = config_mod.load(run.config)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info = pick_checkpoint(run, None)
    quantized: dict[str, str] = {}
    if ckpt.check_manifest(info.path).get("format") == FORMAT:
        key = "generator" if cfg.model.family == "gan" else "model"
        quantized = (read_record(info.path / f"{key}.safetensors") or {}).get("quantized", {})
    _import_backends(quantized)  # library code is not the model's memory
    rss_before = _rss_mb()
    if cfg.model.family in ("gpt", "hf"):
        out = _measure_lm(run_dir, cfg, quantized, repeats)
    else:
        out = _measure_images(run_dir, cfg, quantized, repeats)
    out["peak_mb"] = _peak_mb() - rss_before
    out["threads"] = torch.get_num_threads()
    return out


def _import_backends(quantized: dict[str, str]) -> None:
    """Import what loading the model will import, before the baseline RSS is taken."""
    from genlab.compression.quantize import torchao

    kinds = set(quantized.values())
    if "int8_dynamic" in kinds:
        import torch.ao.nn.quantized.dynamic  # noqa: F401
    if kinds & {"int8_weight_only", "int4_weight_only"}:
        torchao()


@torch.inference_mode()
def _measure_lm(run_dir: Path, cfg, quantized: dict[str, str], repeats: int) -> dict[str, float]:
    from genlab.evaluation.run import load_run_model

    loaded = load_run_model(run_dir, device="cpu")
    model = loaded.model.eval()
    if cfg.finetune.method == "lora":
        from genlab.finetune import merge_lora

        merge_lora(model)
    T = cfg.data.block_size
    g = torch.Generator().manual_seed(0)
    vocab = loaded.tokenizer.vocab_size
    x1 = torch.randint(0, vocab, (1, T), generator=g)
    x8 = torch.randint(0, vocab, (8, T), generator=g)
    b1 = _median_seconds(lambda: model(x1), repeats)
    b8 = _median_seconds(lambda: model(x8), max(2, repeats // 2))
    prompt = x1[:, :1]
    gen = _median_seconds(lambda: model.generate(prompt, GENERATE_TOKENS, 0.0), 3)
    return {
        "forward_b1_tokens_per_s": T / b1,
        "forward_b8_tokens_per_s": 8 * T / b8,
        "generate_tokens_per_s": GENERATE_TOKENS / gen,
        "weights_mb": weights_bytes_in_memory(model, quantized) / 2**20,
    }


@torch.inference_mode()
def _measure_images(run_dir: Path, cfg, quantized: dict[str, str], repeats: int) -> dict:
    from genlab.image_generation import load_image_run

    family = load_image_run(run_dir).family
    g = torch.Generator().manual_seed(0)
    if cfg.model.family == "vae":
        model = family.model.eval()

        def sample() -> object:
            return model.sample(SAMPLE_BATCH, generator=g)
    else:
        model = family.ema.module if family.ema is not None else family.gan.generator
        model.eval()
        z = torch.randn(SAMPLE_BATCH, cfg.model.gan.z_dim, generator=g)

        def sample() -> object:
            return model(z)

    seconds = _median_seconds(sample, repeats)
    return {
        "samples_per_s": SAMPLE_BATCH / seconds,
        "weights_mb": weights_bytes_in_memory(model, quantized) / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(measure_run(Path(args[0]))))
    return 0


__all__ = ["measure_run", "weights_bytes_in_memory"]

if __name__ == "__main__":
    sys.exit(main())
