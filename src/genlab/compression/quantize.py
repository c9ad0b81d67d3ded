"""Quantization: replace layers by lower-precision versions, and store them so they reload.

Which library does what (measured on this project's CPU, benchmarks/compress.py):

- `int8_dynamic`: int8 weights (symmetric, one scale per output row) and activations
  quantized on the fly per batch. On CPU PyTorch's own x86/fbgemm kernel
  (`torch.ao.nn.quantized.dynamic.Linear`) is used: torchao's
  `Int8DynamicActivationInt8WeightConfig` ran 2.5x *slower* than fp32 here, PyTorch's 1.6x
  faster. Such a model runs on CPU only (the compressed run's `train.device` is `cpu`).
- `int8_weight_only`: torchao's `Int8Tensor` as the layer weight (int8 in memory and on disk,
  dequantized in the matmul): smaller, not faster on CPU.
- `int4_weight_only`: torchao's `Int4WeightOnlyConfig` (group size 32), which needs its int4
  kernel: CUDA, or the `mslk` package. Where it is missing, genlab says so (exit 2). Its
  packed layout is device-specific, so the file keeps the bf16 weights and the model is
  quantized again on load.
- `fp16` / `bf16`: the layer's weights in half precision, inputs cast down and outputs back
  to fp32 around it (the residual stream and norms stay fp32).

One function (`int8_rows`, torchao's `Int8Tensor.from_hp`) makes every int8 weight, and
both int8 kinds store exactly its integers and scales: a reloaded model computes what the
saved one did, without quantizing again. Only `nn.Linear` layers take int8/int4 (neither
library has int8 convolutions); fp16/bf16 also cover convolutions.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from genlab.compression.layers import LAYER_TYPES, find_layers, set_module, shrink_layer
from genlab.errors import ConfigError, first_line, require
from genlab.registry import Registry

INT4_GROUP = 32


@contextlib.contextmanager
def _quiet_libraries():
    """torchao logs missing optional kernels on import and torch.ao warns that it is
    deprecated; neither is the user's concern here."""
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.ERROR)
    pytree = logging.getLogger("torch.utils._pytree")
    pytree_level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)
        pytree.setLevel(pytree_level)


def torchao():
    """`torchao.quantization`, imported quietly (the `quant` extra)."""
    with _quiet_libraries():
        require("torchao", "quant")
        import torchao.quantization as q

    return q


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-row int8 quantization of a (out, in) weight: int8 values (out, in)
    and fp32 scales (out, 1), weight ≈ values * scales (torchao's choose_qparams_affine)."""
    q = torchao()
    t = q.Int8Tensor.from_hp(weight.detach().float(), q.PerRow())
    return t.qdata.contiguous(), t.scale.float().reshape(-1, 1).contiguous()


class CastLayer(nn.Module):
    """A layer run in `dtype`: inputs cast to it, outputs back to the input's dtype. Half
    precision keeps fp16/bf16 weights; fp32 holds a kernel that takes fp32 only (PyTorch's
    dynamic int8 Linear) in a model that may run under bf16 autocast (a bf16 run is scored
    so, as in training), where an autocast Linear would give bf16 out as well."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.layer = layer.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(self.dtype)).to(x.dtype)


@dataclass(frozen=True)
class Quantizer(abc.ABC):
    """One quantization kind: which layers it takes, how it makes a layer's runtime module,
    what it stores, and how the stored tensors become that module again."""

    name: str
    layer_types: tuple[type[nn.Module], ...] = (nn.Linear,)

    def check(self, device: torch.device) -> None:  # noqa: B027 (optional: most kinds run anywhere)
        """Raise ConfigError where this kind cannot run (a missing kernel)."""

    @abc.abstractmethod
    def quantize(self, layer: nn.Module) -> nn.Module:
        """The runtime module that replaces a full-precision `layer`."""

    @abc.abstractmethod
    def pack(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors that store a quantized `module` (safetensors-ready)."""

    @abc.abstractmethod
    def unpack(self, tensors: dict[str, torch.Tensor], template: nn.Module) -> nn.Module:
        """The runtime module again from `pack`'s tensors, shaped like `template`."""


def _bias(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {} if layer.bias is None else {"bias": layer.bias.detach().float()}


class Int8Dynamic(Quantizer):
    """PyTorch's dynamically quantized Linear (x86/fbgemm), from genlab's int8 weights; it
    takes fp32 inputs only, so it sits in an fp32 `CastLayer` (a bf16 run is scored under
    autocast)."""

    def check(self, device: torch.device) -> None:
        if device.type != "cpu":
            raise ConfigError(
                f"compress.quantize 'int8_dynamic' uses PyTorch's CPU kernel, but this run is on "
                f"{device.type}; set train.device=cpu for it, or use int8_weight_only"
            )

    def quantize(self, layer: nn.Module) -> nn.Module:
        values, scales = int8_rows(layer.weight)
        return self._module(values, scales, layer.bias, layer.in_features, layer.out_features)

    def pack(self, module: nn.Module) -> dict[str, torch.Tensor]:
        with _quiet_libraries():
            qweight, bias = module.layer._weight_bias()
        out = {
            "weight_int8": qweight.int_repr().contiguous(),
            "weight_scale": qweight.q_per_channel_scales().float().reshape(-1, 1),
        }
        if bias is not None:
            out["bias"] = bias.detach().float()
        return out

    def unpack(self, tensors: dict[str, torch.Tensor], template: nn.Module) -> nn.Module:
        values, scales = tensors["weight_int8"], tensors["weight_scale"]
        out_f, in_f = values.shape
        return self._module(values, scales, tensors.get("bias"), in_f, out_f)

    @staticmethod
    def _module(values, scales, bias, in_features: int, out_features: int) -> nn.Module:
        with _quiet_libraries():
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

            module = DynamicLinear(in_features, out_features, dtype=torch.qint8)
            zeros = torch.zeros(out_features, dtype=torch.long)
            qweight = torch._make_per_channel_quantized_tensor(
                values.cpu(), scales.reshape(-1).double().cpu(), zeros, 0
            )
            module.set_weight_bias(qweight, None if bias is None else bias.detach().float().cpu())
        return CastLayer(module, torch.float32)


class Int8WeightOnly(Quantizer):
    """torchao's Int8Tensor (weight-only) as the layer's weight."""

    def quantize(self, layer: nn.Module) -> nn.Module:
        values, scales = int8_rows(layer.weight)
        return self._module(values, scales, layer.bias, layer)

    def pack(self, module: nn.Module) -> dict[str, torch.Tensor]:
        w = module.weight
        return {
            "weight_int8": w.qdata.contiguous(),
            "weight_scale": w.scale.float(),
            **_bias(module),
        }

    def unpack(self, tensors: dict[str, torch.Tensor], template: nn.Module) -> nn.Module:
        return self._module(
            tensors["weight_int8"], tensors["weight_scale"], tensors.get("bias"), template
        )

    @staticmethod
    def _module(values, scales, bias, template: nn.Module) -> nn.Module:
        q = torchao()
        out_f, in_f = values.shape
        device = template.weight.device
        layer = nn.Linear(in_f, out_f, bias=bias is not None, device=device)
        weight = q.Int8Tensor(
            values.to(device), scales.reshape(-1, 1).float().to(device), [1, in_f], torch.float32
        )
        layer.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().float().to(device), requires_grad=False)
        return layer


class Int4WeightOnly(Quantizer):
    """torchao's int4 weight-only layers, quantized from the stored bf16 weights on load."""

    def check(self, device: torch.device) -> None:
        probe = nn.Linear(INT4_GROUP * 4, 16, device=device)
        try:
            self.quantize(probe)(torch.randn(2, INT4_GROUP * 4, device=device))
        except (ImportError, NotImplementedError, AssertionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"compress.quantize 'int4_weight_only' needs torchao's int4 kernel, which is not "
                f"available on {device.type} here ({first_line(exc)[:100]}); use "
                "int8_weight_only or int8_dynamic, or run on a CUDA GPU"
            ) from None

    def quantize(self, layer: nn.Module) -> nn.Module:
        q = torchao()
        cast = CastLayer(layer, torch.bfloat16)
        config = q.Int4WeightOnlyConfig(
            group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d"
        )
        with _quiet_libraries():
            q.quantize_(cast, config, filter_fn=lambda m, _: isinstance(m, nn.Linear))
        cast.source = {"weight": layer.weight.detach().to(torch.bfloat16), **_bias(layer)}
        return cast

    def pack(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return dict(module.source)

    def unpack(self, tensors: dict[str, torch.Tensor], template: nn.Module) -> nn.Module:
        out_f, in_f = tensors["weight"].shape
        layer = nn.Linear(in_f, out_f, bias="bias" in tensors, device=template.weight.device)
        with torch.no_grad():
            layer.weight.copy_(tensors["weight"].float())
            if "bias" in tensors:
                layer.bias.copy_(tensors["bias"])
        return self.quantize(layer)


@dataclass(frozen=True)
class HalfPrecision(Quantizer):
    """Weights in fp16 or bf16 (CastLayer); linear and convolution layers."""

    dtype: torch.dtype = torch.float16

    def quantize(self, layer: nn.Module) -> nn.Module:
        return CastLayer(layer, self.dtype)

    def pack(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in module.layer.state_dict().items()}

    def unpack(self, tensors: dict[str, torch.Tensor], template: nn.Module) -> nn.Module:
        weight = tensors["weight"]
        out_dim = 1 if isinstance(template, nn.ConvTranspose2d) else 0
        in_dim = 1 - out_dim
        layer = shrink_layer(
            template,
            keep_out=range(weight.shape[out_dim]),
            keep_in=range(weight.shape[in_dim]),
        )
        cast = CastLayer(layer, self.dtype)
        cast.layer.load_state_dict(tensors)
        return cast


# compress.quantize -> its Quantizer (imported on lookup).
QUANTIZERS = Registry(
    "quantization",
    {
        "int8_dynamic": "genlab.compression.quantize:INT8_DYNAMIC",
        "int8_weight_only": "genlab.compression.quantize:INT8_WEIGHT_ONLY",
        "int4_weight_only": "genlab.compression.quantize:INT4_WEIGHT_ONLY",
        "fp16": "genlab.compression.quantize:FP16",
        "bf16": "genlab.compression.quantize:BF16",
    },
)
INT8_DYNAMIC = Int8Dynamic("int8_dynamic")
INT8_WEIGHT_ONLY = Int8WeightOnly("int8_weight_only")
INT4_WEIGHT_ONLY = Int4WeightOnly("int4_weight_only")
FP16 = HalfPrecision("fp16", LAYER_TYPES, torch.float16)
BF16 = HalfPrecision("bf16", LAYER_TYPES, torch.bfloat16)


def quantizable(model: nn.Module, kind: str, keep: Sequence[str]) -> dict[str, nn.Module]:
    """The layers `kind` would quantize: of its layer types, not tied, not in `keep`."""
    quantizer = QUANTIZERS.lookup(kind, where="compress.quantize")
    return find_layers(model, keep, quantizer.layer_types)


def quantize_layers(model: nn.Module, kind: str, names: Sequence[str]) -> dict[str, str]:
    """Replace each named layer by its `kind` module, in place; returns {name: kind}."""
    quantizer = QUANTIZERS.lookup(kind, where="compress.quantize")
    for name in names:
        set_module(model, name, quantizer.quantize(model.get_submodule(name)))
    return dict.fromkeys(names, kind)


__all__ = [
    "QUANTIZERS",
    "CastLayer",
    "Quantizer",
    "int8_rows",
    "quantizable",
    "quantize_layers",
    "torchao",
]
