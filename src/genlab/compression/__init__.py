"""genlab.compression: make a trained model smaller and faster, and measure what it costs.

`genlab compress RUN_DIR [compress.key=value ...]` (the Python API: `genlab.compress`) reads
the run's `compress:` section and writes a new run directory that `genlab eval` and
`genlab generate` load like any run:

    settings.py    the request (run, config, output), checked before torch is imported
    prune.py       magnitude (per layer / global) and Wanda masks; PRUNERS registry
    structured.py  attention heads, MLP neurons, conv channels: tensors really shrink
    quantize.py    int8 dynamic, int8 weight-only, int4 weight-only, fp16, bf16; QUANTIZERS
    recovery.py    fine-tuning the pruned model through the one training loop, masks fixed
    gate.py        compress.max_quality_loss with per-layer fallback
    storage.py     the compressed checkpoint format (read by training.checkpoint)
    subject.py     per family: the module compressed, calibration, quality (genlab eval's)
    measure.py     speed and memory in a fresh process
    table.py       compression.json, the console table, plots/compression.png
    run.py         the command: checks, build, gate, save, measure; --sweep

Importing this package imports none of them (torch, torchao load when used).
"""

from __future__ import annotations

from typing import Any

__all__ = ["compress"]


def __getattr__(name: str) -> Any:
    if name == "compress":  # the same function as genlab.compress
        from genlab.api import compress

        return compress
    raise AttributeError(f"module 'genlab.compression' has no attribute {name!r}")
