"""The stability guard: every detector and every rung of the ladder, triggered on purpose
through guard.inject, with its outcome checked."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from genlab.errors import GuardAbort
from genlab.training.guard import Guard, RobustWindow
from genlab.training.loop import resume, train
from testkit import TINY, loss_keys, read_metrics, run_cli, tiny_config


def events(run_dir):
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]


def weights(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step-{step}" / "model.safetensors"))


def state(run_dir, step):
    return torch.load(run_dir / "checkpoints" / f"step-{step}" / "state.pt", weights_only=True)


EVERY_STEP = ["train.checkpoint_every=1", "train.keep_checkpoints=100"]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("nan_loss", "nonfinite_loss"), ("inf_grad", "nonfinite_grad"), ("loss_spike", "loss_spike")],
)
def test_skipped_step_leaves_weights_and_optimizer_untouched(tmp_path, fault, kind):
    cfg = tiny_config(
        "train.max_steps=30", *EVERY_STEP, f"guard.inject=[{{step: 25, kind: {fault}}}]"
    )
    run = train(cfg, tmp_path / "r").run_dir
    [event] = events(run)
    assert (event["step"], event["kind"], event["action"]) == (25, kind, "skip")
    before, after = weights(run, 24), weights(run, 25)
    assert all(torch.equal(before[k], after[k]) for k in before)
    s24, s25 = state(run, 24), state(run, 25)
    assert s25["updates"] == s24["updates"] == 24  # no optimizer / scheduler advance
    opt24, opt25 = s24["optimizers"]["model"], s25["optimizers"]["model"]
    assert opt25["state"][0]["step"] == opt24["state"][0]["step"]
    # The next step trains again.
    assert not all(torch.equal(after[k], weights(run, 26)[k]) for k in after)
    records = read_metrics(run)
    assert records[24]["guard/skipped_steps"] == 1
    if fault == "nan_loss":  # a NaN is logged as NaN, never filtered out
        assert math.isnan(records[24]["train/loss"])


def test_second_event_cools_the_lr_down_then_it_ramps_back(tmp_path):
    inject = "guard.inject=[{step: 22, kind: nan_loss}, {step: 24, kind: nan_loss}]"
    cooldown = ["guard.cooldown_steps=5", "guard.ramp_steps=5", "guard.cooldown_factor=0.1"]
    run = train(
        tiny_config("train.max_steps=40", "schedule.decay=constant", inject, *cooldown),
        tmp_path / "r",
    ).run_dir
    assert [(e["step"], e["action"]) for e in events(run)] == [(22, "skip"), (24, "lr_cooldown")]
    lr = {r["step"]: r["train/lr"] for r in read_metrics(run)}
    base = lr[20]
    assert lr[25] == pytest.approx(0.1 * base) and lr[29] == pytest.approx(0.1 * base)
    assert 0.1 * base < lr[32] < base  # ramping back
    assert lr[35] == pytest.approx(base)


def test_rollback_restores_the_last_healthy_checkpoint_and_skips_the_bad_data(tmp_path):
    cfg = tiny_config(
        "train.max_steps=40",
        "train.checkpoint_every=10",
        "train.keep_checkpoints=10",
        "guard.ladder=[rollback]",
        "guard.inject=[{step: 27, kind: loss_spike, scale: 1000}]",
    )
    run = train(cfg, tmp_path / "r").run_dir
    [event] = events(run)
    assert event["kind"] == "loss_spike" and event["action"] == "rollback"
    assert event["detail"]["rolled_back_to"] == 20
    bad = event["detail"]["skipped_samples"]
    assert len(bad) == 2 * 8  # skip_window=2 batches of batch_size 8
    # Step 30's checkpoint holds the weights of step 20 plus 3 clean updates (28, 29, 30).
    s30 = state(run, 30)
    assert s30["updates"] == 23
    assert set(bad) <= set(s30["family"]["sampler"]["skipped"])


@pytest.mark.parametrize("memory_snapshot", [True, False], ids=["from-ram", "from-disk"])
def test_a_rollback_restores_exactly_the_healthy_checkpoint(tmp_path, memory_snapshot):
    # The fault at step 21 rolls back to step 20; step 21 is the last, so its checkpoint
    # holds exactly what the rollback restored: the weights and optimizer state of step 20.
    cfg = tiny_config(
        "train.max_steps=21",
        "train.checkpoint_every=10",
        "train.keep_checkpoints=10",
        "guard.ladder=[rollback]",
        "guard.inject=[{step: 21, kind: nan_loss}]",
        "guard.healthy_after=0",
        f"guard.memory_snapshot={str(memory_snapshot).lower()}",
    )
    run = train(cfg, tmp_path / "r").run_dir
    assert [e["detail"]["rolled_back_to"] for e in events(run)] == [20]
    healthy, restored = weights(run, 20), weights(run, 21)
    assert healthy.keys() == restored.keys()
    for name, tensor in healthy.items():
        assert torch.equal(restored[name], tensor), name
    s20, s21 = state(run, 20), state(run, 21)
    assert s21["updates"] == s20["updates"] == 20
    adam20 = s20["optimizers"]["model"]["state"]
    adam21 = s21["optimizers"]["model"]["state"]
    assert adam20.keys() == adam21.keys() and len(adam20) > 0
    for idx, moments in adam20.items():
        for key, value in moments.items():
            assert torch.equal(adam21[idx][key], value), (idx, key)
    # Training before step 20 did move the weights: the comparison above is not vacuous.
    assert any(not torch.equal(weights(run, 10)[n], t) for n, t in healthy.items())


def test_resume_after_a_rollback_replays_the_same_skips(tmp_path):
    overrides = [
        "train.max_steps=50",
        "train.checkpoint_every=10",
        "train.keep_checkpoints=10",
        "guard.ladder=[rollback]",
        "guard.inject=[{step: 27, kind: nan_loss}]",
    ]
    full = train(tiny_config(*overrides), tmp_path / "full").run_dir
    # Simulate a run killed after step 34: its newest complete checkpoint is step 30.
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for step in (40, 50):
        shutil.rmtree(cut / "checkpoints" / f"step-{step}")
    resume(cut)
    assert loss_keys(read_metrics(cut)) == loss_keys(read_metrics(full))
    skipped = events(full)[0]["detail"]["skipped_samples"]
    # With another batch size the recorded sample ids stay skipped.
    resume(cut, ["train.max_steps=60", "train.batch_size=4"])
    assert set(skipped) <= set(state(cut, 60)["family"]["sampler"]["skipped"])


def test_abort_exits_3_with_a_diagnosis(tmp_path, capsys):
    inject = (
        "guard.inject=[" + ", ".join(f"{{step: {s}, kind: nan_loss}}" for s in range(21, 30)) + "]"
    )
    run_dir = tmp_path / "r"
    code = run_cli(
        "train",
        "examples/lm.yaml",
        *TINY,
        "train.max_steps=40",
        "guard.abort_after=4",
        inject,
        "--run-dir",
        run_dir,
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "training aborted by the stability guard at step 24" in err
    assert "optim.lr=" in err and "schedule.warmup_steps=" in err
    assert "which data: sample ids" in err
    assert (run_dir / "diagnosis.txt").read_text().startswith("training aborted")
    actions = [e["action"] for e in events(run_dir)]
    assert actions == ["skip", "lr_cooldown", "rollback", "abort"]


def test_abort_raises_guard_abort_in_the_api(tmp_path):
    inject = "guard.inject=[{step: 21, kind: nan_loss}, {step: 22, kind: nan_loss}]"
    with pytest.raises(GuardAbort, match=r"guard\.max_rollbacks=0"):
        train(
            tiny_config(
                "train.max_steps=30", "guard.ladder=[rollback]", "guard.max_rollbacks=0", inject
            ),
            tmp_path / "r",
        )


def test_checkpoint_is_healthy_only_after_clean_steps(tmp_path):
    # Checkpoint 20 is followed by an event at 22 (< healthy_after=3 steps): never healthy.
    cfg = tiny_config(
        "train.max_steps=40",
        "train.checkpoint_every=10",
        "train.keep_checkpoints=10",
        "guard.inject=[{step: 22, kind: nan_loss}]",
    )
    run = train(cfg, tmp_path / "r").run_dir
    flags = {
        s: json.loads((run / "checkpoints" / f"step-{s}" / "manifest.json").read_text())["healthy"]
        for s in (10, 20, 30, 40)
    }
    assert flags == {10: True, 20: False, 30: True, 40: True}
    # Resume picks the last healthy one: remove 30 and 40, and it starts from 10.
    for s in (30, 40):
        shutil.rmtree(run / "checkpoints" / f"step-{s}")
    resume(run, ["train.max_steps=40"])
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 41))


def test_robust_window_ignores_spikes_and_non_finite_values():
    g = Guard(tiny_config().guard)
    for i in range(30):
        assert g.inspect(i + 1, 2.0 + 0.01 * (i % 3), 1.0 + 0.01 * (i % 2)) is None
    assert g.inspect(31, float("nan"), 1.0).kind == "nonfinite_loss"
    assert g.inspect(32, 2.0, float("inf")).kind == "nonfinite_grad"
    assert g.inspect(33, 50.0, 1.0).kind == "loss_spike"
    assert g.inspect(34, 2.0, 100.0).kind == "grad_explosion"
    assert all(math.isfinite(v) and v < 3 for v in g.loss_window.values)
    assert max(g.grad_window.values) < 2
    w = RobustWindow(10)
    w.values.extend([1.0] * 10)
    assert w.zscore(1.0) == 0  # a flat history does not divide by zero


# Grad norms of steps 1-20 of a healthy LoRA fine-tune (a tiny GPT-2, lr warming up to 1e-3),
# as logged; step 21's was 0.1325, about 2x their median, and the z-score alone skipped it.
LORA_GRAD_NORMS = [
    0.0705, 0.0702, 0.0925, 0.0659, 0.0639, 0.0668, 0.0658, 0.0655, 0.0652, 0.0878,
    0.0605, 0.0526, 0.0520, 0.0647, 0.0737, 0.0634, 0.0620, 0.0660, 0.0815, 0.0558,
]  # fmt: skip


@pytest.mark.parametrize(
    ("grad_ratio", "grad_norm", "flagged"),
    [(3.0, 0.1325, False), (3.0, 0.33, True), (1.0, 0.1325, True)],
    ids=["2x-healthy", "5x-explosion", "ratio-off"],
)
def test_a_grad_explosion_needs_the_ratio_as_well_as_the_z_score(grad_ratio, grad_norm, flagged):
    median = sorted(LORA_GRAD_NORMS)[9]  # the lower middle of 20 (median_low)
    mad = sorted(abs(v - median) for v in LORA_GRAD_NORMS)[9]
    z = (grad_norm - median) / (1.4826 * mad)  # independent of RobustWindow
    assert z > 12  # every case clears the z threshold; the ratio decides
    g = Guard(tiny_config(f"guard.grad_ratio={grad_ratio}").guard)
    for step, norm in enumerate(LORA_GRAD_NORMS, start=1):
        assert g.inspect(step, 2.6, norm) is None
    verdict = g.inspect(21, 2.6, grad_norm)
    assert (verdict is not None and verdict.kind == "grad_explosion") == flagged
    if flagged:
        assert verdict.detail["ratio"] == pytest.approx(grad_norm / median, abs=0.01)


def test_guard_state_round_trips():
    g = Guard(tiny_config("guard.inject=[{step: 3, kind: nan_loss}]").guard)
    for i in range(25):
        g.inspect(i + 1, 1.0 + i * 0.01, 0.5)
    g.inspect(26, float("nan"), 0.5)
    h = Guard(tiny_config().guard)
    h.load_state_dict(g.state_dict())
    assert h.state_dict() == g.state_dict()
    assert h.inspect(27, float("nan"), 0.5).action == g.inspect(27, float("nan"), 0.5).action


def test_each_rollback_lowers_the_lr_for_good(tmp_path):
    cfg = tiny_config(
        "train.max_steps=40",
        "schedule.decay=constant",
        "guard.ladder=[rollback]",
        "guard.rollback_lr_factor=0.5",
        "guard.inject=[{step: 25, kind: nan_loss}]",
    )
    run = train(cfg, tmp_path / "r").run_dir
    lr = {r["step"]: r["train/lr"] for r in read_metrics(run)}
    assert lr[26] == pytest.approx(0.5 * lr[20])
    assert lr[40] == pytest.approx(0.5 * lr[20])
    assert events(run)[0]["detail"]["lr_scale"] == 0.5


@pytest.mark.parametrize("n", [7, 8, 30])
def test_robust_zscore_matches_a_torch_derivation(n):
    values = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    w = RobustWindow(n)
    w.values.extend(values.tolist())
    # Independent: torch.median (lower middle of an even count), MAD, floor on the scale.
    median = values.median().item()
    mad = (values - median).abs().median().item()
    scale = max(1.4826 * mad, 0.05 * abs(median), 1e-12)
    assert w.zscore(3.0) == pytest.approx((3.0 - median) / scale, rel=1e-12)


def test_an_explosion_after_zero_grad_norms_records_standard_json():
    """A window of zero grad norms (nothing trainable reached yet, say) has median 0: the
    explosion's ratio is None, so events.jsonl stays standard JSON (no Infinity)."""
    g = Guard(tiny_config().guard)
    for step in range(1, 21):
        assert g.inspect(step, 2.0, 0.0) is None
    verdict = g.inspect(21, 2.0, 1.0)
    assert verdict is not None and verdict.kind == "grad_explosion"
    assert verdict.detail["ratio"] is None
    json.dumps(verdict.detail, allow_nan=False)  # raises on inf / nan
