"""Compression methods on tiny models, in process: each quantizer and pruner checked against
an independent derivation (rounding arithmetic, brute-force scores, numpy's packbits, masking
the same units in the dense model), and the compressed checkpoint format reloading through
the normal checkpoint loader with the same outputs."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genlab.compression.gate import GateUnit, QualityGateError, fallback_counts, run_gate
from genlab.compression.layers import find_layers, structure_of, tied_layers
from genlab.compression.prune import (
    PRUNERS,
    gradual_sparsity,
    magnitude_masks,
    make_plan,
    wanda_masks,
    zero_fraction,
)
from genlab.compression.quantize import QUANTIZERS, int8_rows, quantizable, quantize_layers
from genlab.compression.storage import pack_bits, save_compressed, unpack_bits
from genlab.compression.structured import ARCHITECTURES
from genlab.config import CompressSection, ModelConfig, PruneSection, VAESection
from genlab.errors import ConfigError
from genlab.models.gpt import GPT
from genlab.models.vae import VAE
from genlab.training import checkpoint as ckpt

VOCAB, BLOCK = 40, 16
SPEC = ModelConfig(n_layer=2, n_head=4, n_embd=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(SPEC, VOCAB, BLOCK).eval()


def tokens(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, BLOCK), generator=torch.Generator().manual_seed(seed))


def save_and_reload(model, quantized, structure, make, tmp_path: Path, key: str = "model"):
    """Save through the compressed format, reload a freshly built model through the normal
    checkpoint loader (training.checkpoint.load_checkpoint)."""
    modules = {key: (model, quantized, structure, [])}
    path = save_compressed(tmp_path, 7, modules, {"step": 7}, "a: 1\n")
    fresh = make()
    ckpt.load_checkpoint(path, {key: fresh})
    return fresh.eval(), path


def test_registries_list_what_the_schema_allows():
    from typing import get_args

    kinds = set(get_args(CompressSection.model_fields["quantize"].annotation)) - {"none"}
    methods = set(get_args(PruneSection.model_fields["method"].annotation)) - {"none"}
    assert set(QUANTIZERS) == kinds
    assert set(PRUNERS) == methods
    assert {"GPT", "HFCausalLM", "network"} == set(ARCHITECTURES)


@pytest.mark.parametrize("kind", ["int8_dynamic", "int8_weight_only", "fp16", "bf16"])
def test_quantized_model_reloads_exactly_and_stays_close(kind, tmp_path):
    base = tiny_gpt()
    model = copy.deepcopy(base)
    names = list(quantizable(model, kind, ["lm_head"]))
    # The tied head (and the pattern) is never quantized; every block layer is.
    assert "lm_head" not in names and len(names) == 4 * SPEC.n_layer
    quantize_layers(model, kind, names)
    x = tokens()
    with torch.no_grad():
        y = model(x)
        reloaded, path = save_and_reload(model, dict.fromkeys(names, kind), {}, tiny_gpt, tmp_path)
        assert torch.equal(reloaded(x), y)  # the stored integers/halves, not re-quantized
        error = (y - base(x)).abs().max().item()
    assert 0 < error < 0.05
    dense = 4 * sum(p.numel() for p in base.parameters())
    size = (path / "model.safetensors").stat().st_size
    assert size < dense  # fewer bytes per weight in the file


@pytest.mark.parametrize("kind", ["int8_dynamic", "int8_weight_only", "fp16", "bf16"])
def test_a_quantized_model_runs_under_the_bf16_autocast_a_bf16_run_is_scored_in(kind, tmp_path):
    """A run trained in bf16 (train.precision auto picks it on CPUs with bf16 kernels) is
    scored under bf16 autocast, its compressed variants too. PyTorch's dynamic int8 Linear
    takes fp32 only: `genlab compress` of such a run crashed scoring its int8_dynamic variant
    ("expected scalar type Float but found BFloat16"). Each kind, reloaded, stays close to
    the uncompressed model under the same autocast."""
    base = tiny_gpt()
    model = copy.deepcopy(base)
    names = list(quantizable(model, kind, []))
    quantize_layers(model, kind, names)
    reloaded, _ = save_and_reload(model, dict.fromkeys(names, kind), {}, tiny_gpt, tmp_path)
    x = tokens()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = base(x).float()
        got = reloaded(x).float()
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 0.1


def test_int8_values_are_symmetric_rounding_per_row():
    w = torch.randn(24, 16)
    values, scales = int8_rows(w)
    # Independent arithmetic: one scale per row = max|w| / 127.5, values = round(w / scale).
    expected_scale = w.abs().amax(dim=1, keepdim=True) / 127.5
    assert torch.allclose(scales, expected_scale, rtol=1e-5)
    ratio = w / expected_scale
    diff = (values.float() - torch.clamp(torch.round(ratio), -128, 127)).abs()
    # Equal except at a row's extreme (|ratio| = 127.5 up to float error, a tie either way).
    assert diff.max() <= 1 and torch.all(ratio[diff > 0].abs() > 127.4)
    assert (w - values.float() * scales).abs().max() <= scales.max() / 2 + 1e-6


def test_int4_without_its_kernel_is_a_one_line_config_error():
    quantizer = QUANTIZERS["int4_weight_only"]
    try:
        quantizer.check(torch.device("cpu"))
    except ConfigError as exc:
        message = str(exc)
        assert "int4" in message and "\n" not in message and len(message) <= 300
        assert "int8_weight_only" in message  # the fix
    else:
        pytest.skip("this platform has torchao's int4 kernel")


@pytest.mark.parametrize(
    ("method", "scope"), [("magnitude", "layer"), ("magnitude", "global"), ("wanda", "layer")]
)
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_measured_sparsity_equals_requested(method, scope, sparsity):
    model = tiny_gpt()
    x = tokens(8)
    plan = make_plan(model, method, sparsity, [], scope, lambda m: m(x))
    plan.apply(model)
    layers = list(find_layers(model))
    assert set(plan.masks) == set(layers) and "lm_head" not in layers  # tied: never pruned
    assert zero_fraction(model, layers) == pytest.approx(sparsity, abs=1e-9)
    for name in layers:  # per layer (and per row for wanda) exactly as requested
        w = model.get_submodule(name).weight
        if scope == "layer":
            assert (w == 0).float().mean().item() == pytest.approx(sparsity, abs=1e-9)
        if method == "wanda":
            assert torch.all((w == 0).sum(dim=1) == round(sparsity * w.shape[1]))


def test_global_magnitude_uses_one_threshold_and_layer_scope_one_per_layer():
    model = tiny_gpt()
    layers = find_layers(model)
    masks = magnitude_masks(layers, 0.5, "global")
    kept = torch.cat([m.weight.abs()[masks[n]].flatten() for n, m in layers.items()])
    dropped = torch.cat([m.weight.abs()[~masks[n]].flatten() for n, m in layers.items()])
    assert kept.min() >= dropped.max()  # one threshold over all layers
    per_layer = magnitude_masks(layers, 0.5, "layer")
    shares = [per_layer[n].float().mean().item() for n in layers]
    global_shares = [masks[n].float().mean().item() for n in layers]
    assert all(s == 0.5 for s in shares) and len(set(global_shares)) > 1


def test_wanda_scores_weights_by_input_activation_norms():
    torch.manual_seed(0)
    layer = nn.Linear(8, 4, bias=False)
    with torch.no_grad():  # magnitudes within a factor 2, so the activations decide
        layer.weight.copy_((torch.rand(4, 8) + 1) * torch.sign(torch.randn(4, 8)))
    x = torch.randn(64, 8) * torch.tensor([10.0, 1, 1, 1, 0.01, 1, 1, 1])  # loud / quiet input
    norms = {"l": x.norm(dim=0)}
    masks = wanda_masks({"l": layer}, 0.5, norms)
    # Brute force: per row, keep the 4 largest |w_ij| * ||x_j||.
    score = layer.weight.detach().abs() * x.norm(dim=0)
    for row, keep in zip(score, masks["l"], strict=True):
        assert set(torch.nonzero(keep).flatten().tolist()) == set(row.topk(4).indices.tolist())
    assert masks["l"][:, 0].all() and not masks["l"][:, 4].any()  # loud input kept, quiet gone


def _zero_removed_units(dense: GPT, cuts) -> GPT:
    """The same units removed by masking: zero the removed heads' and neurons' columns of
    the projection that consumes them (an independent derivation of structured pruning)."""
    model = copy.deepcopy(dense)
    with torch.no_grad():
        for cut in cuts.values():
            for name, cols in cut.keep_in.items():
                layer = model.get_submodule(name)
                drop = sorted(set(range(layer.weight.shape[1])) - set(cols))
                layer.weight[:, drop] = 0
    return model


def test_structured_pruning_shrinks_tensors_and_equals_masking_the_units(tmp_path):
    dense = tiny_gpt()
    model = copy.deepcopy(dense)
    x = tokens(8)
    plan = make_plan(model, "structured", 0.5, ["blocks.1.mlp"], "layer", lambda m: m(x))
    assert set(plan.cuts) == {"blocks.0.attn", "blocks.0.mlp", "blocks.1.attn"}  # 1 excluded
    plan.apply(model)
    assert model.blocks[0].attn.n_head == 2 and model.blocks[0].attn.qkv.weight.shape == (48, 32)
    assert model.blocks[0].mlp.fc.weight.shape == (64, 32)
    assert model.blocks[1].mlp.fc.weight.shape == (128, 32)  # excluded: untouched
    with torch.no_grad():
        shrunk = model(x)
        assert torch.allclose(shrunk, _zero_removed_units(dense, plan.cuts)(x), atol=1e-5)
        reloaded, _ = save_and_reload(model, {}, structure_of(model), tiny_gpt, tmp_path)
        assert torch.equal(reloaded(x), shrunk)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_structured_pruning_of_vae_channels(arch, tmp_path):
    def make() -> VAE:
        torch.manual_seed(0)
        return VAE((1, 8, 8), VAESection(arch=arch, hidden=32, base_channels=8, latent_dim=4))

    dense = make().eval()
    x = torch.rand(16, 1, 8, 8)
    model = copy.deepcopy(dense)
    plan = make_plan(model, "structured", 0.5, [], "layer", lambda m: m.reconstruct(x))
    assert plan.cuts and all(c.removed == c.total // 2 for c in plan.cuts.values())
    plan.apply(model)
    before = sum(p.numel() for p in dense.parameters())
    assert sum(p.numel() for p in model.parameters()) < before
    reference = copy.deepcopy(dense)  # the same channels silenced in the dense network
    with torch.no_grad():
        for cut in plan.cuts.values():
            for name, cols in cut.keep_in.items():
                layer = reference.get_submodule(name)
                in_dim = 0 if isinstance(layer, nn.ConvTranspose2d) else 1
                drop = sorted(set(range(layer.weight.shape[in_dim])) - set(cols))
                layer.weight.index_fill_(in_dim, torch.tensor(drop), 0.0)
        out = model.reconstruct(x)
        assert out.shape == x.shape
        assert torch.allclose(out, reference.reconstruct(x), atol=1e-5)
        reloaded, _ = save_and_reload(
            model, {}, structure_of(model), lambda: make().eval(), tmp_path
        )
        assert torch.equal(reloaded.reconstruct(x), out)


def test_bitmask_matches_numpy_and_sparse_weights_shrink_the_file(tmp_path):
    mask = torch.rand(37, 11) > 0.5
    packed = pack_bits(mask)
    assert np.array_equal(packed.numpy(), np.packbits(mask.numpy().reshape(-1)))
    assert torch.equal(unpack_bits(packed, [37, 11]), mask)
    dense = tiny_gpt()
    pruned = copy.deepcopy(dense)
    make_plan(pruned, "magnitude", 0.75, [], "layer", lambda m: None).apply(pruned)
    _, dense_path = save_and_reload(dense, {}, {}, tiny_gpt, tmp_path / "a")
    reloaded, sparse_path = save_and_reload(pruned, {}, {}, tiny_gpt, tmp_path / "b")
    assert torch.equal(reloaded(tokens()), pruned(tokens()))
    size = (sparse_path / "model.safetensors").stat().st_size
    assert size < 0.75 * (dense_path / "model.safetensors").stat().st_size


def test_tied_head_is_found_and_left_alone():
    model = tiny_gpt()
    assert tied_layers(model) == {"wte", "lm_head"}
    assert "lm_head" not in find_layers(model) and "lm_head" not in quantizable(model, "fp16", [])


def test_gradual_sparsity_ramps_cubically_to_the_target():
    values = [gradual_sparsity(s, 0.5, 10) for s in range(0, 13)]
    assert values[0] == 0 and values[10] == values[12] == 0.5
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert values[5] == pytest.approx(0.5 * (1 - 0.5**3))


def test_gate_keeps_the_most_sensitive_units_first():
    units = [GateUnit("quantize", f"l{i}") for i in range(5)]
    cost = {"l0": 0.001, "l1": 0.03, "l2": 0.002, "l3": 0.02, "l4": 0.004}

    def measure(kept):
        return sum(c for n, c in cost.items() if n not in {u.name for u in kept})

    result = run_gate(units, measure, lambda u: cost[u.name], 0.01)
    assert result.passed and [u.name for u in result.kept] == ["l1", "l3"]
    assert result.loss == pytest.approx(0.007) and len(result.attempts) == 3
    with pytest.raises(QualityGateError, match="cannot be met") as exc:
        run_gate(units, measure, lambda u: cost[u.name], 0.0005)
    assert "\n" not in str(exc.value) and "0.10%" in str(exc.value)  # l0 alone


def test_fallback_counts_linear_or_doubling():
    assert fallback_counts(5, False) == [1, 2, 3, 4]
    assert fallback_counts(9, True) == [1, 2, 4, 8]
    assert fallback_counts(6, True) == [1, 2, 4, 5]
    assert fallback_counts(1, True) == []


def test_quantized_and_pruned_counts_in_a_saved_file_are_exact(tmp_path):
    model = tiny_gpt()
    x = tokens(8)
    make_plan(model, "wanda", 0.5, [], "layer", lambda m: m(x)).apply(model)
    structure = structure_of(model)
    names = list(quantizable(model, "int8_dynamic", []))
    quantize_layers(model, "int8_dynamic", names)
    reloaded, _ = save_and_reload(
        model, dict.fromkeys(names, "int8_dynamic"), structure, tiny_gpt, tmp_path
    )
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
    qweight = reloaded.blocks[0].mlp.fc.layer._weight_bias()[0]
    share = (qweight.int_repr() == 0).float().mean().item()  # pruned zeros stay zeros in int8
    assert share >= 0.5 and math.isclose(share, 0.5, abs_tol=0.02)


def test_a_bad_request_fails_before_torch_is_imported(tmp_path):
    import subprocess
    import sys
    import textwrap

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("name: r\n")
    code = textwrap.dedent(
        """
        import sys
        from genlab.compression.settings import resolve
        from genlab.errors import ConfigError
        for overrides in ([], ["compress.prune.method=lottery"], ["model.n_layer=2"]):
            try:
                resolve("run", overrides, None, False, False)
            except ConfigError as exc:
                assert "\\n" not in str(exc), exc
            else:
                raise SystemExit("no error")
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]
