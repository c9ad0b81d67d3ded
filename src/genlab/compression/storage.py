"""How a compressed model is stored in a checkpoint, and how the normal loading path reads it.

A compressed checkpoint is an ordinary genlab checkpoint directory (`manifest.json` with
`"format": "compressed"`, hashes of every file, `config.yaml`, `state.pt`) whose
`<module>.safetensors` files hold:

- quantized layers as what their quantizer stores (int8 values + per-row scales for both int8
  kinds, half-precision tensors for fp16/bf16, bf16 weights for int4), under the layer's name
  (`blocks.0.attn.qkv.weight_int8`, `.weight_scale`, `.bias`);
- every other tensor as in a state dict, tied tensors once;
- any tensor that is mostly zeros (pruned) as its non-zero values plus a bitmask
  (`<name>.__values`, `<name>.__bitmask`, one bit per element), whenever that is smaller:
  50% sparsity stores fp32 weights in 2.125 bytes per element instead of 4;
- in the safetensors header (`genlab.compression` metadata): which layers are quantized and
  how, the shape of every resizable layer (structured pruning shrinks them), which tensors are
  bit-packed, which names are aliases of a tied tensor, and whether GPT-2 Conv1D layers were
  converted to Linear.

`genlab.training.checkpoint.load_checkpoint` sends such a checkpoint here: the model the run's
config builds (the original architecture) is reshaped to the recorded structure, its layers
replaced by the recorded quantized modules, and the tensors loaded, so `genlab eval`,
`genlab generate` and the image evaluation load a compressed run like any other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file
from torch import nn

from genlab.compression.layers import convert_conv1d, restore_structure, set_module
from genlab.compression.quantize import QUANTIZERS
from genlab.errors import CheckpointError, first_line
from genlab.training import checkpoint as ckpt

FORMAT = "compressed"  # manifest.json "format"
META_KEY = "genlab.compression"
VALUES, BITMASK = "__values", "__bitmask"
MIN_SAVING = 0.97  # bit-pack a tensor only when that saves at least 3%


# --------------------------------------------------------------------------- bit packing


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bytes, 8 elements per byte (row-major, most significant first)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]).view(-1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (flat * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """The inverse of `pack_bits`: a bool tensor of `shape`."""
    shifts = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)
    bits = (packed.reshape(-1, 1) >> shifts) & 1  # (bytes, 8)
    n = 1
    for s in shape:
        n *= int(s)
    return bits.reshape(-1)[:n].bool().reshape(shape)


def _maybe_sparse(name: str, t: torch.Tensor, out: dict, sparse: dict) -> None:
    """Store `t` bit-packed when most of it is zero and that is smaller, else as it is."""
    if t.dim() >= 2 and t.numel() >= 64:
        mask = t != 0
        kept = int(mask.sum())
        packed_bytes = kept * t.element_size() + (t.numel() + 7) // 8
        if packed_bytes < MIN_SAVING * t.numel() * t.element_size():
            out[f"{name}.{VALUES}"] = t[mask].contiguous()
            out[f"{name}.{BITMASK}"] = pack_bits(mask)
            sparse[name] = list(t.shape)
            return
    out[name] = t.contiguous()


def _dense_from_sparse(tensors: dict[str, torch.Tensor], sparse: dict) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in tensors.items() if not k.endswith((VALUES, BITMASK))}
    for name, shape in sparse.items():
        values, packed = tensors[f"{name}.{VALUES}"], tensors[f"{name}.{BITMASK}"]
        mask = unpack_bits(packed, shape)
        if int(mask.sum()) != values.numel():
            raise CheckpointError(
                f"compressed tensor {name!r} has {values.numel()} values for "
                f"{int(mask.sum())} mask bits; the file is damaged — compress the run again"
            )
        dense = torch.zeros(shape, dtype=values.dtype)
        dense[mask] = values
        out[name] = dense
    return out


# --------------------------------------------------------------------------- writing


def pack_model(
    model: nn.Module,
    quantized: dict[str, str],
    structure: dict[str, dict],
    conv1d: list[str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and header record that store `model` (see the module doc)."""
    tensors: dict[str, torch.Tensor] = {}
    sparse: dict[str, list[int]] = {}
    for name, kind in quantized.items():
        for key, t in QUANTIZERS[kind].pack(model.get_submodule(name)).items():
            _maybe_sparse(f"{name}.{key}", t.detach().cpu(), tensors, sparse)
    prefixes = tuple(f"{n}." for n in quantized)
    seen: dict[tuple[int, torch.dtype, tuple], str] = {}
    aliases: dict[str, str] = {}
    for key, t in model.state_dict().items():
        if key.startswith(prefixes):
            continue
        ident = (t.data_ptr(), t.dtype, tuple(t.shape))
        if t.numel() and ident in seen:  # a tied tensor: stored once
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        _maybe_sparse(key, t.detach().cpu(), tensors, sparse)
    record = {
        "version": 1,
        "quantized": quantized,
        "structure": structure,
        "sparse": sparse,
        "aliases": aliases,
        "conv1d_to_linear": list(conv1d or []),
    }
    return tensors, record


def save_compressed(
    root: Path,
    step: int,
    modules: dict[str, tuple[nn.Module, dict[str, str], dict[str, dict], list[str]]],
    state: dict[str, Any],
    config_yaml: str,
) -> Path:
    """Write checkpoint `step` under `root` atomically: one `<key>.safetensors` per entry of
    `modules` ({key: (model, quantized layers, structure, converted Conv1D names)})."""
    tmp = ckpt.begin_save(root, step)
    try:
        for key, (model, quantized, structure, conv1d) in modules.items():
            tensors, record = pack_model(model, quantized, structure, conv1d)
            save_file(tensors, str(tmp / f"{key}.safetensors"), {META_KEY: json.dumps(record)})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ckpt.finish_save(tmp, root, step, state, config_yaml, True, fmt=FORMAT)


def weights_bytes(checkpoint: Path, keys: list[str]) -> int:
    """Bytes of the weight files of `keys` in a checkpoint directory."""
    return sum((checkpoint / f"{k}.safetensors").stat().st_size for k in keys)


# --------------------------------------------------------------------------- reading


def read_record(file: Path) -> dict[str, Any] | None:
    """The compression record in a safetensors header (None for an ordinary weights file)."""
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(
            f"{str(file)!r} is not a readable safetensors file ({first_line(exc)[:120]}); "
            "the checkpoint is damaged — compress or train the run again"
        ) from None
    raw = meta.get(META_KEY)
    return None if raw is None else json.loads(raw)


def load_compressed(path: Path, modules: dict[str, nn.Module]) -> None:
    """Load a compressed checkpoint into freshly built plain `modules` (in place: layers are
    reshaped and replaced by their quantized modules first)."""
    for key, module in modules.items():
        file = ckpt.weights_file(path, key)
        record = read_record(file)
        if record is None:  # an uncompressed module next to compressed ones
            load_model(module, str(file))
            continue
        _load_module(module, file, record, path)


def _load_module(model: nn.Module, file: Path, record: dict[str, Any], path: Path) -> None:
    with safe_open(str(file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    tensors = _dense_from_sparse(tensors, record.get("sparse", {}))
    if record.get("conv1d_to_linear"):
        convert_conv1d(model)
    restore_structure(model, record.get("structure", {}))
    quantized: dict[str, str] = record.get("quantized", {})
    # Plain tensors first, into the all-float model (quantized layers' own keys are missing
    # there on purpose), then the quantized layers replace their float placeholders.
    prefixes = tuple(f"{n}." for n in quantized)
    dense = {k: v for k, v in tensors.items() if not k.startswith(prefixes)}
    for alias, target in record.get("aliases", {}).items():
        dense[alias] = dense[target]
    try:
        missing, unexpected = model.load_state_dict(dense, strict=False)
    except RuntimeError as exc:  # a shape that does not fit
        raise _misfit(path, first_line(exc)) from None
    missing = [k for k in missing if not k.startswith(prefixes)]
    if missing or unexpected:
        raise _misfit(path, f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
    for name, kind in quantized.items():
        prefix = f"{name}."
        parts = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            template = model.get_submodule(name)
        except AttributeError:
            raise _misfit(path, f"no layer {name!r}") from None
        set_module(model, name, QUANTIZERS.lookup(kind, where=str(file)).unpack(parts, template))


def export_obstacle(checkpoint: Path, structured: bool) -> str | None:
    """What keeps a compressed checkpoint from leaving genlab (None when nothing does).
    Quantized layers are genlab / PyTorch modules that the export formats cannot hold, and
    structurally pruned attention has fewer heads than its width, which GPT-2 cannot express;
    unstructured pruning leaves dense tensors of the original shapes, which export as they are.
    `structured`: the run's config says its units were removed (compress.prune.method)."""
    if ckpt.check_manifest(checkpoint).get("format") != FORMAT:
        return None
    quantized: dict[str, str] = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        quantized.update((read_record(file) or {}).get("quantized", {}))
    if quantized:
        kinds = sorted(set(quantized.values()))
        return f"{len(quantized)} quantized layers ({', '.join(kinds)})"
    return "structurally pruned layers (smaller shapes)" if structured else None


def _misfit(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"compressed checkpoint {str(path)!r} does not fit the model its config builds "
        f"({what[:160]}); compress the source run again"
    )


__all__ = [
    "FORMAT",
    "export_obstacle",
    "load_compressed",
    "pack_bits",
    "pack_model",
    "read_record",
    "save_compressed",
    "unpack_bits",
    "weights_bytes",
]
