"""Structured pruning: remove whole attention heads, MLP neurons and conv channels, so the
tensors shrink and the forward pass does less work.

A *unit* is something that can be removed as a whole: one attention head of a GPT block
(its rows of `qkv`, its columns of `proj`), one hidden neuron of an MLP (a row of the up
projection(s), a column of the down projection), one channel (or GroupNorm group) between two
layers of a VAE/GAN network. Each unit's importance is the activation-aware score Wanda uses,
summed over the unit's input features of the layer that consumes it:
    score(unit) = sum_j ||x_j||_2 * ||W_consumer[:, j]||_2
with ||x_j|| measured on calibration batches of the train split. The lowest round(sparsity * n)
units of each group go (at least one stays).

Which units a model has depends on its architecture (ARCHITECTURES, by class name):
genlab's GPT (heads and MLP neurons of every block), a Hugging Face causal LM (MLP neurons
of every `*.mlp`: GPT-2 after Conv1D->Linear conversion, Llama-style gate/up/down; attention
heads are left alone: transformers 5 has no generic head pruning), and any other network
(VAE, GAN generator): consecutive layers inside an `nn.Sequential` (with activations and
norms between them), the conv encoder's last conv -> flattened head, and the conv decoder's
projection -> first conv.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from genlab.compression.layers import LAYER_TYPES, matches, tied_layers, weight_dims
from genlab.compression.prune import Calibrate, ChannelCut, PrunePlan, input_norms
from genlab.registry import Registry

PER_CHANNEL = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity
)  # fmt: skip
NORMS = (nn.GroupNorm, nn.BatchNorm2d)


@dataclass(frozen=True)
class Unit:
    """A group of removable units: `count` of them, scored through `consumer`'s input
    features (`features(i)` are unit i's), cut by `cut(kept indices)`."""

    name: str
    count: int
    consumer: str
    features: Callable[[int], list[int]]
    cut: Callable[[list[int]], ChannelCut]


# --------------------------------------------------------------------------- GPT


def gpt_units(model: nn.Module) -> list[Unit]:
    """Heads and MLP neurons of every block of genlab's GPT."""
    units = []
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}"
        attn, mlp = block.attn, block.mlp
        nh, hs = attn.n_head, attn.head_size

        def head_cut(keep: list[int], p=p, nh=nh, hs=hs) -> ChannelCut:
            rows = [s * nh * hs + h * hs + r for s in range(3) for h in keep for r in range(hs)]
            cols = [h * hs + r for h in keep for r in range(hs)]
            return ChannelCut(
                f"{p}.attn",
                {f"{p}.attn.qkv": rows},
                {f"{p}.attn.proj": cols},
                attrs={f"{p}.attn": {"n_head": len(keep)}},
                removed=nh - len(keep),
                total=nh,
            )

        def head_features(h: int, hs=hs) -> list[int]:
            return list(range(h * hs, (h + 1) * hs))  # the head's columns of proj

        units.append(Unit(f"{p}.attn", nh, f"{p}.attn.proj", head_features, head_cut))
        units.append(_neurons(f"{p}.mlp", [f"{p}.mlp.fc"], f"{p}.mlp.proj", mlp.fc.out_features))
    return units


def _neurons(name: str, ups: list[str], down: str, count: int) -> Unit:
    def cut(keep: list[int]) -> ChannelCut:
        return ChannelCut(
            name, dict.fromkeys(ups, keep), {down: keep}, removed=count - len(keep), total=count
        )

    return Unit(name, count, down, lambda j: [j], cut)


# --------------------------------------------------------------------------- HF causal LMs


def hf_units(model: nn.Module) -> list[Unit]:
    """MLP neurons of every `*.mlp` module of a Hugging Face causal LM (after Conv1D layers
    became Linear): up projection(s) -> down projection."""
    units = []
    for name, module in model.named_modules():
        if not name.endswith("mlp"):
            continue
        children = {
            f"{name}.{n}": c for n, c in module.named_children() if isinstance(c, nn.Linear)
        }
        if len(children) < 2:
            continue
        inter = max(c.out_features for c in children.values())
        downs = [n for n, c in children.items() if c.in_features == inter]
        ups = [n for n, c in children.items() if c.out_features == inter]
        if len(downs) == 1 and ups:
            units.append(_neurons(name, ups, downs[0], inter))
    return units


# --------------------------------------------------------------------------- image networks


def network_units(model: nn.Module) -> list[Unit]:
    """Channels / hidden units between consecutive layers of the VAE and GAN networks."""
    units = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            units += _sequential_units(model, name, module)
        if (
            hasattr(module, "project")
            and hasattr(module, "body")
            and hasattr(module, "start_shape")
        ):
            unit = _projection_unit(model, name, module)
            if unit is not None:
                units.append(unit)
    return units


def _sequential_units(model: nn.Module, name: str, seq: nn.Sequential) -> list[Unit]:
    layers = list(seq)
    units = []
    for i, producer in enumerate(layers):
        if not isinstance(producer, LAYER_TYPES):
            continue
        norms, j = [], i + 1
        while j < len(layers) and isinstance(layers[j], (*PER_CHANNEL, *NORMS)):
            if isinstance(layers[j], NORMS):
                norms.append(f"{_join(name, str(j))}")
            j += 1
        channels = producer.weight.shape[weight_dims(producer)[0]]
        if j < len(layers) and isinstance(layers[j], LAYER_TYPES):
            consumer, in_block = _join(name, str(j)), 1
        elif j == len(layers):
            head = _head_after(model, name, channels)
            if head is None:
                continue
            consumer, in_block = head
        else:
            continue
        units.append(
            _channel_unit(model, _join(name, str(i)), channels, consumer, norms, in_block=in_block)
        )
    return units


def _head_after(model: nn.Module, seq_name: str, channels: int) -> tuple[str, int] | None:
    """A conv encoder's `features` end in its last conv, consumed flattened by `head`."""
    parent_name, _, child = seq_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    head = getattr(parent, "head", None)
    if child != "features" or not isinstance(head, nn.Linear) or head.in_features % channels:
        return None
    return _join(parent_name, "head"), head.in_features // channels


def _projection_unit(model: nn.Module, name: str, decoder: nn.Module) -> Unit | None:
    """A conv decoder's `project` Linear, viewed as (channels, h, w), into its first conv."""
    ch, h, w = decoder.start_shape
    body = list(decoder.body)
    norms, j = [], 0
    while j < len(body) and isinstance(body[j], (*PER_CHANNEL, *NORMS)):
        if isinstance(body[j], NORMS):
            norms.append(_join(name, f"body.{j}"))
        j += 1
    if j == len(body) or not isinstance(body[j], LAYER_TYPES):
        return None
    consumer = _join(name, f"body.{j}")

    def attrs(kept: int) -> dict[str, dict[str, object]]:
        return {name: {"start_shape": (kept, h, w)}}

    project = _join(name, "project")
    return _channel_unit(model, project, ch, consumer, norms, out_block=h * w, attrs=attrs)


def _channel_unit(
    model: nn.Module,
    producer: str,
    channels: int,
    consumer: str,
    norms: list[str],
    out_block: int = 1,
    in_block: int = 1,
    attrs: Callable[[int], dict[str, dict[str, object]]] | None = None,
) -> Unit:
    """`channels` channels of `producer` (out_block output features each) feeding `consumer`
    (in_block input features each) through per-channel `norms`; with a GroupNorm between,
    whole groups are the units."""
    per_group = 1
    for n in norms:
        norm = model.get_submodule(n)
        if isinstance(norm, nn.GroupNorm):
            per_group = norm.num_channels // norm.num_groups  # whole groups go together
    count = channels // per_group

    def channels_of(groups: list[int]) -> list[int]:
        return [g * per_group + c for g in groups for c in range(per_group)]

    def spread(kept: list[int], block: int) -> list[int]:
        return [c * block + b for c in kept for b in range(block)]

    def cut(keep: list[int]) -> ChannelCut:
        kept = channels_of(keep)
        return ChannelCut(
            producer,
            {producer: spread(kept, out_block)},
            {consumer: spread(kept, in_block)},
            dict.fromkeys(norms, kept),
            attrs=attrs(len(kept)) if attrs is not None else {},
            removed=count - len(keep),
            total=count,
        )

    return Unit(producer, count, consumer, lambda g: spread(channels_of([g]), in_block), cut)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# --------------------------------------------------------------------------- the plan

# Architecture (the compressed module's class name) -> its unit finder; anything else is a
# network of Sequential layers (VAE, GAN generator).
ARCHITECTURES = Registry(
    "architecture for structured pruning",
    {
        "GPT": "genlab.compression.structured:gpt_units",
        "HFCausalLM": "genlab.compression.structured:hf_units",
        "network": "genlab.compression.structured:network_units",
    },
)


def find_units(model: nn.Module) -> list[Unit]:
    name = type(model).__name__
    finder = ARCHITECTURES[name if name in ARCHITECTURES else "network"]
    return finder(model)


def plan_structured(
    model: nn.Module, sparsity: float, exclude: Sequence[str], scope: str, calibrate: Calibrate
) -> PrunePlan:
    """Remove round(sparsity * n) of the lowest-scoring units of every unit group."""
    tied = tied_layers(model)
    units = [
        u
        for u in find_units(model)
        if not matches(u.name, exclude) and u.consumer not in tied and u.count > 1
    ]
    consumers = {u.consumer: model.get_submodule(u.consumer) for u in units}
    norms = input_norms(model, consumers, calibrate)
    cuts = {}
    for unit in units:
        layer = consumers[unit.consumer]
        feature = norms[unit.consumer] * _input_column_norms(layer)  # (in_features,)
        scores = torch.stack([feature[unit.features(i)].sum() for i in range(unit.count)])
        n_keep = max(1, unit.count - round(sparsity * unit.count))
        keep = sorted(torch.topk(scores, n_keep).indices.tolist())
        cuts[unit.name] = unit.cut(keep)
    return PrunePlan("structured", cuts=cuts)


def _input_column_norms(layer: nn.Module) -> torch.Tensor:
    """||W[:, j]||_2 for every input feature/channel j of a layer: (in,)."""
    _, in_dim = weight_dims(layer)
    w = layer.weight.detach().float().cpu().movedim(in_dim, 0)
    return w.reshape(w.shape[0], -1).norm(dim=1)


__all__ = ["ARCHITECTURES", "Unit", "find_units", "plan_structured"]
