"""The layers compression acts on, found by name, and the surgery that replaces or shrinks them.

A *layer* is a leaf module holding a weight matrix or kernel: `nn.Linear`, `nn.Conv2d`,
`nn.ConvTranspose2d` (and transformers' GPT-2 `Conv1D`, converted to an equivalent
`nn.Linear` first, so every method sees one kind of linear layer). Layers whose weight is
shared with another module (a GPT's output head tied to its token embedding) are never
compressed on their own: changing one would change the other.

Names are the model's dotted module names (`blocks.0.attn.qkv`, `hf.transformer.h.0.mlp.c_fc`,
`decoder.net.0`). A pattern such as `lm_head` or `attn.*` matches a name when it matches the
whole name or any dotted suffix of it (fnmatch), so short patterns work for every family.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

import torch
from torch import nn

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """True when `name` or one of its dotted suffixes matches one of `patterns`."""
    parts = name.split(".")
    suffixes = [".".join(parts[i:]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(s, p) for p in patterns for s in suffixes)


def tied_layers(model: nn.Module) -> set[str]:
    """Names of modules whose weight Parameter also belongs to another module."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            owners.setdefault(id(weight), []).append(name)
    return {n for names in owners.values() if len(names) > 1 for n in names}


def find_layers(
    model: nn.Module,
    exclude: Sequence[str] = (),
    types: tuple[type[nn.Module], ...] = LAYER_TYPES,
) -> dict[str, nn.Module]:
    """Compressible layers by name, in module order: of `types`, not tied, not excluded."""
    tied = tied_layers(model)
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, types) and name not in tied and not matches(name, exclude)
    }


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called `name` (dotted) by `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def convert_conv1d(model: nn.Module) -> list[str]:
    """Replace every transformers `Conv1D` (y = x @ W + b, W stored (in, out)) with the
    `nn.Linear` that computes the same thing (weight transposed to (out, in)); returns the
    names converted. Quantizers and pruners then see plain linear layers."""
    names = [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    for name in names:
        old = model.get_submodule(name)
        n_in, n_out = old.weight.shape
        new = nn.Linear(n_in, n_out, bias=old.bias is not None)
        with torch.no_grad():
            new.weight.copy_(old.weight.t())
            if old.bias is not None:
                new.bias.copy_(old.bias)
        new.weight.requires_grad_(old.weight.requires_grad)
        set_module(model, name, new.to(old.weight.device))
    return names


# Which weight dimension indexes output / input channels, per layer type.
OUT_DIM = {nn.Linear: 0, nn.Conv2d: 0, nn.ConvTranspose2d: 1}
IN_DIM = {nn.Linear: 1, nn.Conv2d: 1, nn.ConvTranspose2d: 0}


def weight_dims(layer: nn.Module) -> tuple[int, int]:
    """(output dim, input dim) of a layer's weight."""
    kind = type(layer)
    return OUT_DIM[kind], IN_DIM[kind]


def shrink_layer(
    layer: nn.Module,
    keep_out: Sequence[int] | None = None,
    keep_in: Sequence[int] | None = None,
) -> nn.Module:
    """A new layer of the same type keeping only output features/channels `keep_out` and
    input features/channels `keep_in` (None keeps all), weights copied. Linear, Conv2d,
    ConvTranspose2d, and the norms between them (GroupNorm: pass `keep_out` = the channels of
    whole groups kept; its group count shrinks in proportion; BatchNorm2d, LayerNorm)."""
    device = next(layer.parameters()).device
    if isinstance(layer, nn.GroupNorm):
        keep = list(keep_out if keep_out is not None else range(layer.num_channels))
        per_group = layer.num_channels // layer.num_groups
        new = nn.GroupNorm(len(keep) // per_group, len(keep), layer.eps, layer.affine)
        return _copy_selected(layer, new.to(device), {"weight": (0, keep), "bias": (0, keep)})
    if isinstance(layer, nn.BatchNorm2d):
        keep = list(keep_out if keep_out is not None else range(layer.num_features))
        new = nn.BatchNorm2d(len(keep), layer.eps, layer.momentum, layer.affine)
        picks = {k: (0, keep) for k in ("weight", "bias", "running_mean", "running_var")}
        new = _copy_selected(layer, new.to(device), picks)
        new.num_batches_tracked.copy_(layer.num_batches_tracked)
        return new
    out_dim, in_dim = weight_dims(layer)
    w = layer.weight
    keep_out = list(keep_out if keep_out is not None else range(w.shape[out_dim]))
    keep_in = list(keep_in if keep_in is not None else range(w.shape[in_dim]))
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        new = nn.Linear(len(keep_in), len(keep_out), bias=bias)
    else:  # Conv2d / ConvTranspose2d keep their geometry, only the channel counts change
        kwargs = {
            "kernel_size": layer.kernel_size,
            "stride": layer.stride,
            "padding": layer.padding,
            "dilation": layer.dilation,
            "bias": bias,
        }
        if isinstance(layer, nn.ConvTranspose2d):
            kwargs["output_padding"] = layer.output_padding
        new = type(layer)(len(keep_in), len(keep_out), **kwargs)
    picks = {"weight": [(out_dim, keep_out), (in_dim, keep_in)], "bias": (0, keep_out)}
    return _copy_selected(layer, new.to(device, w.dtype), picks)


def _copy_selected(old: nn.Module, new: nn.Module, picks: dict) -> nn.Module:
    """Copy old's tensors into new, each indexed along the given dims."""
    with torch.no_grad():
        for name, spec in picks.items():
            src = getattr(old, name, None)
            if src is None:
                continue
            for dim, idx in spec if isinstance(spec, list) else [spec]:
                src = src.index_select(dim, torch.as_tensor(idx, device=src.device))
            getattr(new, name).copy_(src)
    for p_old, p_new in zip(old.parameters(), new.parameters(), strict=True):
        p_new.requires_grad_(p_old.requires_grad)
    return new


def layer_spec(layer: nn.Module) -> dict:
    """The shape of a layer or norm, as plain data (what the loader rebuilds it from)."""
    if isinstance(layer, nn.GroupNorm):
        return {"type": "GroupNorm", "groups": layer.num_groups, "channels": layer.num_channels}
    if isinstance(layer, nn.BatchNorm2d):
        return {"type": "BatchNorm2d", "channels": layer.num_features}
    out_dim, in_dim = weight_dims(layer)
    shape = layer.weight.shape
    return {"type": type(layer).__name__, "out": shape[out_dim], "in": shape[in_dim]}


RESIZABLE = (*LAYER_TYPES, nn.GroupNorm, nn.BatchNorm2d)


def structure_of(model: nn.Module) -> dict[str, dict]:
    """Every resizable layer's spec by name, plus the attributes structured pruning changes
    (attention `n_head`, a conv decoder's `start_shape`): what a loader needs to rebuild a
    pruned model from a freshly built one."""
    out: dict[str, dict] = {}
    for name, module in model.named_modules():
        if isinstance(module, RESIZABLE):
            out[name] = layer_spec(module)
        for attr in STRUCTURE_ATTRIBUTES:
            if hasattr(module, attr) and not isinstance(module, RESIZABLE):
                value = getattr(module, attr)
                out.setdefault(name, {})[attr] = list(value) if isinstance(value, tuple) else value
    return out


# Attributes (besides layer shapes) that structured pruning rewrites and loading restores.
STRUCTURE_ATTRIBUTES = ("n_head", "start_shape")


def restore_structure(model: nn.Module, structure: dict[str, dict]) -> None:
    """Shrink a freshly built model's layers to the recorded shapes and set the recorded
    attributes (the inverse of `structure_of`, weights are loaded afterwards)."""
    for name, spec in structure.items():
        try:
            module = model.get_submodule(name) if name else model
        except AttributeError:
            continue  # the caller's missing-key check names what does not fit
        if isinstance(module, RESIZABLE) and "type" in spec:
            now = layer_spec(module)
            if now != spec:
                set_module(model, name, _resized(module, spec))
        for attr in STRUCTURE_ATTRIBUTES:
            if attr in spec:
                value = spec[attr]
                setattr(module, attr, tuple(value) if isinstance(value, list) else int(value))


def _resized(module: nn.Module, spec: dict) -> nn.Module:
    if isinstance(module, nn.GroupNorm):
        per_group = spec["channels"] // spec["groups"]
        keep = range(spec["groups"] * per_group)
        resized = shrink_layer(module, keep_out=keep)
        return resized
    if isinstance(module, nn.BatchNorm2d):
        return shrink_layer(module, keep_out=range(spec["channels"]))
    return shrink_layer(module, keep_out=range(spec["out"]), keep_in=range(spec["in"]))
