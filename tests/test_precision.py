"""train.precision auto: the decision from injected measurements (never from a timing in a
test), the cache, and a run that records the concrete precision it trained in."""

import json
import shutil

import pytest
import torch
import yaml

from genlab.training import precision
from genlab.training.loop import resume, train
from testkit import linear_output_dtypes, read_metrics, tiny_config

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("native", "speeds", "chosen"),
    [
        (False, {"fp32": 100.0, "bf16": 300.0}, "fp32"),  # emulated bf16: never
        (True, {"fp32": 100.0, "bf16": 210.0}, "bf16"),
        (True, {"fp32": 100.0, "bf16": 104.0}, "fp32"),  # within the noise margin
        (True, {"fp32": 100.0, "bf16": 87.0}, "fp32"),  # a small model: casts cost more
        (True, None, "fp32"),  # a family that is not calibrated
    ],
)
def test_the_decision_follows_the_hardware_and_the_measurement(native, speeds, chosen):
    assert precision.decide(native, speeds)[0] == chosen


def test_auto_measures_once_per_machine_and_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_MACHINE_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    calls = []

    def calibrate():
        calls.append(1)
        return {"fp32": 100.0, "bf16": 150.0}

    first = precision.resolve("auto", CPU, "gpt|abc", calibrate)
    again = precision.resolve("auto", CPU, "gpt|abc", calibrate)
    other = precision.resolve("auto", CPU, "gpt|other", calibrate)
    assert (first.chosen, first.cached, again.chosen, again.cached) == ("bf16", False, "bf16", True)
    assert not other.cached and len(calls) == 2
    assert again.record()["calibration"] == {"fp32": 100.0, "bf16": 150.0}
    explicit = precision.resolve("fp32", CPU, "gpt|abc", calibrate)
    assert (explicit.chosen, len(calls)) == ("fp32", 2)  # set in the config: nothing measured


def test_without_native_bf16_nothing_is_measured(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    choice = precision.resolve("auto", CPU, "k", lambda: pytest.fail("measured"))
    assert (choice.chosen, choice.speeds) == ("fp32", {})


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16"])
    assert precision.native_bf16(CPU)
    monkeypatch.setattr(precision, "cpu_flags", lambda: ["avx2", "amx_bf16"])
    assert precision.native_bf16(CPU)
    monkeypatch.setattr(precision, "cpu_flags", lambda: ["avx2", "avx512f"])
    assert not precision.native_bf16(CPU)


def test_calibration_alternates_and_leaves_fp32():
    seen, state = [], {"p": None}

    def set_precision(p):
        state["p"] = p

    speeds = precision.time_precisions(lambda: seen.append(state["p"]), set_precision, 64)
    assert seen == ["fp32", "bf16"] * (precision.CALIBRATION_ROUNDS + 1)
    assert set(speeds) == {"fp32", "bf16"} and state["p"] == "fp32"


def test_auto_trains_in_the_chosen_precision_and_records_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_MACHINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    injected = {"fp32": 1000.0, "bf16": 1800.0}  # what a calibration would have measured
    monkeypatch.setattr(precision, "time_precisions", lambda step, set_p, units: dict(injected))
    with linear_output_dtypes() as seen:
        cfg = tiny_config("train.max_steps=10", "train.precision=auto")
        run = train(cfg, tmp_path / "r").run_dir
    assert seen == {torch.bfloat16}
    final = json.loads((run / "metrics.json").read_text())
    assert final["precision"]["requested"] == "auto"
    assert final["precision"]["chosen"] == "bf16"
    assert final["precision"]["calibration"] == injected
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["precision"] == "bf16"  # resume, eval and generate use the same
    resume(run, ["train.max_steps=12"])
    assert [r["step"] for r in read_metrics(run)][-1] == 12
    after = json.loads((run / "metrics.json").read_text())["precision"]
    assert (after["requested"], after["chosen"]) == ("bf16", "bf16")


def test_a_real_calibration_leaves_the_model_and_random_state_as_they_were(tmp_path):
    from genlab.training.build import build_family
    from genlab.training.runtime import Autocast

    cfg = tiny_config()
    amp = Autocast(CPU, "fp32")
    family = build_family(cfg, CPU, amp, None)
    before = {k: v.clone() for k, v in family.model.state_dict().items()}
    rng = torch.get_rng_state()
    speeds = precision.time_precisions(
        family.calibration_step, lambda p: setattr(amp, "precision", p), 8 * 32
    )
    assert set(speeds) == {"fp32", "bf16"} and all(v > 0 for v in speeds.values())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in family.model.state_dict().items())
    assert all(p.grad is None for p in family.model.parameters())


def test_a_restarted_auto_run_continues_the_run_that_recorded_its_choice(tmp_path, monkeypatch):
    from genlab.training import elastic

    monkeypatch.setenv("GENLAB_MACHINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # auto → fp32
    settings = ["train.max_steps=10", "train.checkpoint_every=5", "train.precision=auto"]
    run = train(tiny_config(*settings), tmp_path / "r").run_dir
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["precision"] == "fp32"
    shutil.rmtree(run / "checkpoints" / "step-10")  # as if a worker died after step 5's save
    point = elastic.restart_point(run, tiny_config(*settings))  # a restarted worker asks
    assert point is not None and point[2].step == 5
    other = tiny_config(*settings, "optim.lr=1e-3")
    assert elastic.restart_point(run, other) is None  # another config: start over
