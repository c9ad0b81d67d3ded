"""throughput/mfu: FLOPs per token against torch's own FLOP counter, the cached matmul peak,
and the value each metrics line carries."""

import json
import time

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from genlab.data.tokenizers import load_tokenizer
from genlab.models.gpt import build_gpt
from genlab.threads import use_threads
from genlab.training import efficiency
from genlab.training.loop import train
from testkit import read_metrics, tiny_config


@pytest.mark.parametrize("layers", [1, 2])
def test_gpt_flops_per_token_match_torchs_flop_counter(layers):
    cfg = tiny_config(f"model.n_layer={layers}")
    m, T, B = cfg.model, cfg.data.block_size, 3
    model = build_gpt(m, 50, T)
    x = torch.randint(0, 50, (B, T))
    counter = FlopCounterMode(display=False)
    # The math attention kernel: its matmuls are what torch's counter sees on a CPU.
    with sdpa_kernel(SDPBackend.MATH), counter:
        model.loss(x, x).backward()
    ours = efficiency.lm_flops_per_token(model, m.n_layer, m.n_embd, T)
    assert ours * B * T == counter.get_total_flops()


def test_matmul_weights_count_a_tied_matrix_once():
    model = build_gpt(tiny_config().model, 50, 32)
    C = 32
    per_block = 3 * C * C + C * C + 4 * C * C + 4 * C * C  # qkv, proj, fc, mlp proj
    assert efficiency.matmul_weights(model) == per_block + 50 * C  # + the tied lm_head


def test_measuring_the_peak_leaves_the_runs_random_numbers_alone():
    # Measured or read from the cache, the run after it draws the same dropout and samples.
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    peak = efficiency.measure_matmul_peak(torch.device("cpu"), torch.float32, repeats=1)
    assert peak > 0
    assert torch.equal(torch.rand(4), expected)


def test_a_slow_emulated_matmul_is_timed_without_warm_ups_and_briefly(monkeypatch):
    # bf16 on a CPU without native bf16 takes ~2 s a matmul: ten of them would cost a run
    # ~20 s. A clock on which every matmul takes 0.6 s: the first is timed, and the
    # measurement stops once 2 s are spent (4 matmuls, not 2 warm-ups + 8).
    ticks = iter(i * 0.6 for i in range(100))
    monkeypatch.setattr(efficiency.time, "perf_counter", lambda: next(ticks))
    peak = efficiency.measure_matmul_peak(torch.device("cpu"), torch.float32)
    assert next(ticks) == pytest.approx(8 * 0.6)  # 4 matmuls, two clock reads each
    assert peak == pytest.approx(2 * 1024**3 / 0.6)


def test_the_peak_is_measured_once_and_a_damaged_cache_is_measured_again(tmp_path, monkeypatch):
    cache = tmp_path / "matmul_peak.json"
    monkeypatch.setenv(efficiency.MACHINE_CACHE_ENV, str(tmp_path))
    calls = []
    monkeypatch.setattr(efficiency, "measure_matmul_peak", lambda d, t: calls.append(t) or 5e9)
    cpu = torch.device("cpu")
    assert efficiency.matmul_peak(cpu, torch.float32) == 5e9
    assert efficiency.matmul_peak(cpu, torch.float32) == 5e9
    assert efficiency.matmul_peak(cpu, torch.bfloat16) == 5e9
    assert calls == [torch.float32, torch.bfloat16]
    assert len(json.loads(cache.read_text())) == 2
    cache.write_text("{not json")
    assert efficiency.matmul_peak(cpu, torch.float32) == 5e9
    assert len(calls) == 3


def test_a_peak_measured_without_the_cores_to_itself_is_not_cached(tmp_path, monkeypatch):
    """A measurement whose threads got little CPU (others busy) is used once, measured again
    next time, and cached only once the machine is quiet."""
    monkeypatch.setenv(efficiency.MACHINE_CACHE_ENV, str(tmp_path))
    calls = []

    def measure(device, dtype):  # a sleeping thread gets no CPU: like one crowded out
        calls.append(dtype)
        time.sleep(0.1)
        return 1e9

    monkeypatch.setattr(efficiency, "measure_matmul_peak", measure)
    cpu = torch.device("cpu")
    assert efficiency.matmul_peak(cpu, torch.float32) == 1e9
    assert efficiency.matmul_peak(cpu, torch.float32) == 1e9
    assert len(calls) == 2 and not (tmp_path / "matmul_peak.json").exists()
    assert efficiency.cpu_share(0.001, 0.01) == 1.0  # too short to tell: counts as quiet


def test_a_cpu_of_the_same_name_with_other_features_measures_its_own_peak(tmp_path, monkeypatch):
    # Seen: two virtual machines both named "AMD EPYC", one with AVX-512 (156 GFLOP/s), one
    # without (106): the first's cached peak made the second's MFU read low.
    monkeypatch.setenv(efficiency.MACHINE_CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(efficiency, "cpu_model", lambda: "AMD EPYC")
    flags = ["fpu", "avx2", "fma", "avx512f", "avx512_bf16"]  # the first machine
    monkeypatch.setattr(efficiency, "cpu_flags", lambda: flags)
    measure = lambda device, dtype: 156e9 if "avx512f" in flags else 106e9  # noqa: E731
    monkeypatch.setattr(efficiency, "measure_matmul_peak", measure)
    monkeypatch.setattr(efficiency, "cpu_share", lambda cpu_s, wall_s: 1.0)  # a quiet machine
    cpu = torch.device("cpu")
    assert efficiency.matmul_peak(cpu, torch.float32) == 156e9
    with_avx512 = efficiency.machine_key(cpu, torch.float32)
    flags[:] = ["fpu", "avx2", "fma", "sse4_2"]  # a flag no matmul kernel depends on
    assert efficiency.matmul_peak(cpu, torch.float32) == 106e9
    assert "[avx2+fma]" in efficiency.machine_key(cpu, torch.float32)
    assert "[avx2+fma+avx512f+avx512_bf16]" in with_avx512
    flags.append("ht")  # flags that do not change the kernels keep the cached value
    assert efficiency.matmul_peak(cpu, torch.float32) == 106e9
    assert len(json.loads((tmp_path / "matmul_peak.json").read_text())) == 2


def test_every_metrics_line_carries_mfu_against_the_cached_peak(tmp_path, monkeypatch):
    cache = tmp_path / "matmul_peak.json"
    monkeypatch.setenv(efficiency.MACHINE_CACHE_ENV, str(tmp_path))
    cfg = tiny_config("train.max_steps=4", "train.precision=fp32")
    use_threads(cfg.train.threads)  # as the run will: the key names the thread count
    key = efficiency.machine_key(torch.device("cpu"), torch.float32)
    cache.write_text(json.dumps({key: 2.0e9}))  # a known peak: nothing is measured
    run = train(cfg, tmp_path / "r").run_dir
    # Written out independently: 6 x matmul weights (the one block's matrices, 12 C^2; the tied
    # head V C) + 12 L C T for attention, per token.
    C, T, V = 32, 32, load_tokenizer(run).vocab_size
    expected = 6 * (12 * C * C + V * C) + 12 * C * T
    for r in read_metrics(run):
        assert r["throughput/mfu"] == pytest.approx(expected * r["throughput/tokens_per_s"] / 2e9)
