"""`--format onnx` for VAE and GAN runs: the decoder / generator as a latent → image function.

The exported function is the whole path the run's own samples take (`PixelDecoder`): the
network (a VAE's decoder, a GAN's generator, its EMA copy when the run kept one), its output
transform (sigmoid for a BCE VAE, tanh for a GAN) and the run's scaler inverted, so the output
is images (batch, C, H, W) in [0, 1] pixels for latents (batch, latent_dim) ~ N(0, I).

Files: `model.onnx` (input `latent`, output `image`, dynamic batch), `decoder.safetensors`
(the same module's weights) with `decoder.json` (what `load_pixel_decoder` needs to rebuild it
with genlab), and the card. Parity: 64 latents from a seeded generator, PyTorch vs ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.errors import CheckpointError, require
from genlab.exporters.card import write_model_card
from genlab.exporters.job import ExportJob
from genlab.exporters.parity import all_met, goal, max_abs_logit_diff

DECODER_WEIGHTS = "decoder.safetensors"
DECODER_SPEC = "decoder.json"
N_LATENTS = 64
MAX_ABS_PIXEL_DIFF = 1e-4  # pixels are in [0, 1]
OUTPUTS = ("identity", "sigmoid", "tanh")


class PixelDecoder(nn.Module):
    """latents (B, D) → images (B, C, H, W) in [0, 1]: net, output transform, inverse scaling.
    The scaler is per-channel affine in both directions, kept as (1, C, 1, 1) buffers."""

    def __init__(self, net: nn.Module, output: str, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.net = net
        self.output = output
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).float())
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).float())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        y = self.net(latent)  # (B, C, H, W) in the model's range
        if self.output == "sigmoid":
            y = torch.sigmoid(y)
        elif self.output == "tanh":
            y = torch.tanh(y)
        return (y * self.scale + self.shift).clamp(0.0, 1.0)


def check(job: ExportJob) -> None:
    """Nothing beyond the ONNX dependencies: every VAE and GAN has a decoder to export."""


def _load_family(job: ExportJob) -> Any:
    from genlab.training import checkpoint as ckpt
    from genlab.training.build import build_family

    family = build_family(job.cfg, torch.device("cpu"), contextlib.nullcontext(), job.run.root)
    ckpt.load_checkpoint(job.checkpoint.path, family.modules)
    return family


def pixel_decoder(job: ExportJob) -> tuple[PixelDecoder, dict[str, Any]]:
    """The run's latent → pixels module and its spec (decoder.json)."""
    family = _load_family(job)
    scaler = family.batches.scaler
    c = family.batches.image_shape[0]
    shift = scaler.inverse_transform(torch.zeros(1, c, 1, 1, dtype=torch.float64)).flatten()
    scale = scaler.inverse_transform(torch.ones(1, c, 1, 1, dtype=torch.float64)).flatten() - shift
    if job.family == "vae":
        model = family.model
        net, latent_dim = model.decoder, model.latent_dim
        output = "sigmoid" if model.config.recon == "bce" else "identity"
        arch, norm = model.config, model.NORM
    else:
        generator = family.ema.module if family.ema is not None else family.gan.generator
        net, latent_dim, output = generator.net, generator.z_dim, "tanh"
        arch, norm = generator.config, generator.NORM
        if family.ema is not None:
            job.notes.append("The generator is the run's EMA copy (what its samples use).")
    spec = {
        "family": job.family,
        "latent_dim": int(latent_dim),
        "image_shape": list(family.batches.image_shape),
        "arch": arch.arch,
        "base_channels": arch.base_channels,
        "hidden": arch.hidden,
        "norm": norm,
        "output": output,
    }
    return PixelDecoder(net, output, scale, shift).eval(), spec


def load_pixel_decoder(directory: str | Path) -> PixelDecoder:
    """Rebuild an exported decoder from `decoder.json` + `decoder.safetensors` (with genlab)."""
    from safetensors.torch import load_model

    from genlab.models.image_nets import make_decoder

    directory = Path(directory)
    try:
        spec = json.loads((directory / DECODER_SPEC).read_text(encoding="utf-8"))
        shape = tuple(spec["image_shape"])
        sizes = (spec["arch"], spec["base_channels"], spec["hidden"], spec["norm"])
        net = make_decoder(shape, spec["latent_dim"], *sizes)
        output = spec["output"] if spec["output"] in OUTPUTS else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{str(directory)!r} holds no readable {DECODER_SPEC} ({type(exc).__name__}); "
            "point at a directory written by `genlab export --format onnx` for an image run"
        ) from None
    if output is None:
        raise CheckpointError(f"{DECODER_SPEC} names an unknown output {spec['output']!r}")
    c = shape[0]
    module = PixelDecoder(net, output, torch.ones(c), torch.zeros(c))
    load_model(module, str(directory / DECODER_WEIGHTS))
    return module.eval()


def write_onnx(job: ExportJob, out: Path) -> dict[str, Any]:
    from safetensors.torch import save_model

    from genlab.exporters.onnx import runtime_fn, session, symbolic_axes, write_graph

    decoder, spec = pixel_decoder(job)
    g = torch.Generator().manual_seed(job.cfg.seed)
    latents = torch.randn(N_LATENTS, spec["latent_dim"], generator=g)
    batch = torch.export.Dim("batch", min=1)
    graph = out / "model.onnx"
    write_graph(decoder, (latents[:2],), graph, (("latent",), "image"), ({0: batch},))
    save_model(decoder, str(out / DECODER_WEIGHTS), metadata={"format": "pt"})
    (out / DECODER_SPEC).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")

    onnx_images = runtime_fn(session(graph))
    with torch.no_grad():
        full = max_abs_logit_diff(decoder, onnx_images, latents, batch_size=N_LATENTS)
        odd = max_abs_logit_diff(decoder, onnx_images, latents[:7], batch_size=7)
        reloaded = load_pixel_decoder(out)
        safetensors_diff = (reloaded(latents) - decoder(latents)).abs().max().item()
    axes = symbolic_axes(graph)
    goals = {
        "max_abs_pixel_diff": goal(max(full, odd), MAX_ABS_PIXEL_DIFF),
        "safetensors_reload_diff": goal(safetensors_diff, 0.0),
        "dynamic_batch": goal(isinstance(axes["latent"][0], str), True, "=="),
    }
    ort = require("onnxruntime", "export")
    parity = {
        "measured_with": f"onnxruntime {ort.__version__} (CPUExecutionProvider), fp32",
        "latents": N_LATENTS,
        "latent_seed": job.cfg.seed,
        "axes": axes,
        "max_abs_pixel_diff": {str(N_LATENTS): full, "7": odd},
        "goals": goals,
        "ok": all_met(goals),
    }
    c, h, w = spec["image_shape"]
    rows = {
        "network": "VAE decoder" if job.family == "vae" else "GAN generator",
        "input": f"latent float32 (batch, {spec['latent_dim']}) ~ N(0, I)",
        "output": f"image float32 (batch, {c}, {h}, {w}) in [0, 1]",
        "output transform": spec["output"],
    }
    usage = _usage(job.target, spec)
    write_model_card(job, out, title="ONNX decoder", usage=usage, parity=parity, architecture=rows)
    return {"parity": parity, "model": rows}


def _usage(target: Path, spec: dict[str, Any]) -> str:
    shape = ", ".join(map(str, spec["image_shape"]))
    return f"""ONNX Runtime (no PyTorch or genlab needed):

```python
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{target}/model.onnx")
latent = np.random.default_rng(0).standard_normal((16, {spec["latent_dim"]}), dtype=np.float32)
images = session.run(None, {{"latent": latent}})[0]  # (16, {shape}) in [0, 1]
```

PyTorch, with genlab installed (`{DECODER_WEIGHTS}` holds the same module's weights):

```python
import torch
from genlab.exporters.images import load_pixel_decoder

decoder = load_pixel_decoder("{target}")
images = decoder(torch.randn(16, {spec["latent_dim"]}))
```"""


__all__ = ["PixelDecoder", "check", "load_pixel_decoder", "pixel_decoder", "write_onnx"]
