"""Goodput accounting and background checkpoint saves.

The account is checked against what the run logged independently of the clock: each step's
seconds follow from its logged throughput (units per step / units per second), and the guard's
events say which steps were skipped or discarded by a rollback. Background saves are checked
against a direct save (the same bytes), and against a writer slowed down on purpose: a run
never reads back (rollback from disk) or finishes before its save is complete."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from safetensors.torch import save_model

from genlab.models.gpt import GPT
from genlab.training import checkpoint as ckpt
from genlab.training.checkpoint_writer import stage_weights
from genlab.training.loop import resume, train
from testkit import loss_keys, read_metrics, tiny_config

BUCKETS = ["eval", "checkpoint_save", "checkpoint_load", "data", "startup", "skipped"]
BUCKETS += ["rollback", "restart"]
TOKENS_PER_STEP = 8 * 32  # TINY: batch 8 × block 32


def _account(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["goodput"]


def _step_seconds(run_dir) -> dict[int, float]:
    return {
        r["step"]: TOKENS_PER_STEP / r["throughput/tokens_per_s"] for r in read_metrics(run_dir)
    }


def test_the_account_closes_and_matches_the_logged_step_times(tmp_path):
    # A skip at step 7, then a rollback at step 15 to the healthy checkpoint of step 10
    # (steps 11-14 discarded, their time recomputed work).
    cfg = tiny_config(
        "train.max_steps=25",
        "guard.ladder=[skip, rollback]",
        "guard.inject=[{step: 7, kind: nan_loss}, {step: 15, kind: nan_loss}]",
    )
    run = train(cfg, tmp_path / "r").run_dir
    account = _account(run)
    seconds = _step_seconds(run)
    discarded = set(range(11, 15))
    kept = [s for s in seconds if s not in {7, 15} | discarded]
    assert account["productive_s"] == pytest.approx(sum(seconds[s] for s in kept), abs=2e-3)
    lost = account["skipped_s"] + account["rollback_s"]
    expected = seconds[7] + seconds[15] + sum(seconds[s] for s in discarded)
    assert lost == pytest.approx(expected, rel=0.05, abs=0.02)  # + the restore itself
    assert account["rollback_s"] >= sum(seconds[s] for s in discarded) - 2e-3
    # Every second of wall time is in one bucket; the rest ("other") is small and not negative.
    total = account["productive_s"] + sum(account[f"{b}_s"] for b in BUCKETS) + account["other_s"]
    assert total == pytest.approx(account["wall_s"], abs=0.01)
    # "other" holds fixed costs (the final plots' wait: matplotlib's first import in this
    # process takes about a second on a loaded machine), not a share of the steps.
    assert 0 <= account["other_s"] < 0.5 * account["wall_s"] + 1.5
    assert account["eval_s"] > 0 and account["checkpoint_save_s"] > 0
    # Seconds are stored to the millisecond and goodput (from the unrounded seconds) to 4
    # decimals: recomputed from the stored seconds it agrees within what that rounding moves
    # (±0.5 ms on each of ~0.1 s of steps and ~1 s of wall time is a few parts in a thousand).
    wall, g = account["wall_s"], account["productive_s"] / account["wall_s"]
    assert account["goodput"] == pytest.approx(g, abs=5e-5 + 5e-4 * (1 + g) / wall)
    assert account["restarts"] == 0 and account["restart_s"] == 0
    # The last logged time is the wall time up to the last step (metrics.jsonl's clock).
    assert read_metrics(run)[-1]["time"] <= account["wall_s"]


def test_a_resume_counts_the_lost_work_and_continues_the_clock(tmp_path):
    cfg = tiny_config("train.max_steps=20", "schedule.decay=constant")
    run = train(cfg, tmp_path / "r").run_dir
    first = _account(run)
    # An interruption after step 20 that lost the step-20 checkpoint: steps 11-20 are done
    # again, and the time they took the first time is lost to the restart.
    logged_20 = read_metrics(run)[-1]["time"]
    at_10 = ckpt.load_state(run / "checkpoints/step-10")
    ckpt_10_elapsed = at_10["elapsed"]
    shutil.rmtree(run / "checkpoints/step-20")
    began = time.time()
    resume(run)
    took = time.time() - began
    account = _account(run)
    assert account["restart_s"] == pytest.approx(logged_20 - ckpt_10_elapsed, abs=1e-3)
    assert account["restarts"] == 0  # a resume by hand is not an elastic restart
    assert account["checkpoint_load_s"] > 0
    # The buckets of the first attempt up to its step-10 checkpoint are carried over.
    assert account["eval_s"] >= at_10["goodput"]["seconds"]["eval"]
    # The second attempt's own time is added (its clock starts inside the call and stops
    # before the call returns). Not compared with the first attempt's wall time: its end
    # (the final plots, a first matplotlib import) can take longer than a 10-step resume.
    carried = ckpt_10_elapsed + account["restart_s"]
    assert carried + 0.5 * took < account["wall_s"] <= carried + took + 1e-3
    assert first["wall_s"] > logged_20
    ref = train(cfg, tmp_path / "ref").run_dir
    assert loss_keys(read_metrics(run)) == loss_keys(read_metrics(ref))


def test_a_background_save_writes_what_a_direct_save_writes(tmp_path):
    from genlab.config import ModelConfig

    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16), 40, 8)  # tied embedding / head
    save_model(model, str(tmp_path / "direct.safetensors"))
    staged = stage_weights({"model": model})
    ckpt.write_checkpoint(tmp_path / "ckpts", 1, staged, {"step": 1}, "name: x\n", True)
    with torch.no_grad():  # the staged copy shares nothing with the live weights
        for p in model.parameters():
            p.add_(1.0)
    direct = (tmp_path / "direct.safetensors").read_bytes()
    assert (tmp_path / "ckpts/step-1/model.safetensors").read_bytes() == direct
    info = ckpt.verify_checkpoint(tmp_path / "ckpts/step-1")
    assert info.step == 1 and info.healthy


def _slow_writes(monkeypatch, delay: float) -> list[float]:
    """Make every consolidated checkpoint write take `delay` seconds longer; return the times
    the writes finished."""
    finished: list[float] = []
    real = ckpt.write_checkpoint

    def slow(*args, **kwargs):
        time.sleep(delay)
        path = real(*args, **kwargs)
        finished.append(time.monotonic())
        return path

    monkeypatch.setattr(ckpt, "write_checkpoint", slow)
    return finished


def test_background_saves_hold_the_state_of_their_step(tmp_path, monkeypatch):
    # The writer runs 0.3 s behind while training goes on: a save that shared memory with
    # the live weights would hold a later step's weights.
    overrides = ["train.max_steps=20", "train.checkpoint_every=5", "train.keep_checkpoints=10"]
    direct = train(tiny_config(*overrides, "train.async_checkpoint=false"), tmp_path / "sync")
    _slow_writes(monkeypatch, 0.3)
    background = train(tiny_config(*overrides), tmp_path / "async")
    for step in (5, 10, 15, 20):
        name = f"checkpoints/step-{step}/model.safetensors"
        assert (background.run_dir / name).read_bytes() == (direct.run_dir / name).read_bytes()
    assert loss_keys(read_metrics(background.run_dir)) == loss_keys(read_metrics(direct.run_dir))


def test_a_rollback_from_disk_and_the_end_of_a_run_wait_for_the_save(tmp_path, monkeypatch):
    finished = _slow_writes(monkeypatch, 0.5)
    # The fault at step 21 rolls back from disk to step 20, whose save is still being written.
    cfg = tiny_config(
        "train.max_steps=21",
        "train.checkpoint_every=10",
        "guard.ladder=[rollback]",
        "guard.inject=[{step: 21, kind: nan_loss}]",
        "guard.healthy_after=0",
        "guard.memory_snapshot=false",
    )
    result = train(cfg, tmp_path / "r")
    returned = time.monotonic()
    events = [json.loads(x) for x in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["detail"]["rolled_back_to"] for e in events] == [20]
    assert len(finished) == 3 and max(finished) <= returned  # 10, 20 and the final 21
    assert [c.step for c in ckpt.list_checkpoints(result.run_dir / "checkpoints")] == [10, 20, 21]
    assert _account(result.run_dir)["checkpoint_save_s"] >= 0.3  # it waited for the writer


def test_pruning_leaves_a_save_still_being_written_alone(tmp_path):
    # A leftover of another (dead) process is removed; this process's temporary directory
    # may be a background save under way.
    root = tmp_path / "checkpoints"
    mine = ckpt.begin_save(root, 7)
    (root / ".tmp-step-5-999999999-1").mkdir()
    ckpt.prune(root, keep=3)
    assert [p.name for p in root.iterdir()] == [mine.name]


def test_background_sharded_saves_are_complete_and_resume_exactly(tmp_path):
    # One process: DCP's async_save without a process group, sealed by the writer thread.
    overrides = ["train.max_steps=20", "schedule.decay=constant", "train.checkpoint_format=sharded"]
    run = train(tiny_config(*overrides), tmp_path / "r").run_dir
    first = loss_keys(read_metrics(run))
    for step in (10, 20):
        path = run / f"checkpoints/step-{step}"
        assert ckpt.verify_checkpoint(path).step == step
        assert ckpt.is_sharded(ckpt.check_manifest(path))
        assert (path / "sharded/.metadata").is_file()
    shutil.rmtree(run / "checkpoints/step-20")
    resume(run)  # from the background-saved step 10
    assert loss_keys(read_metrics(run)) == first


def test_the_in_memory_snapshot_copies_the_optimizer_as_deepcopy_does():
    """clone_state (the RAM snapshot's copy of an optimizer's state) equals copy.deepcopy's,
    shares no storage with the live state, and stays as it was while training goes on."""
    import copy

    from genlab.training.checkpoint_writer import clone_state

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)

    def step():
        opt.zero_grad()
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()

    step()
    live = opt.state_dict()
    cloned, reference = clone_state(live), copy.deepcopy(live)
    assert cloned["param_groups"] == reference["param_groups"]
    assert cloned["param_groups"][0]["params"] is not live["param_groups"][0]["params"]
    for index, state in reference["state"].items():
        for key, value in state.items():
            assert torch.equal(cloned["state"][index][key], value)
            assert cloned["state"][index][key].data_ptr() != live["state"][index][key].data_ptr()
    step()  # the live state moves on; the copy does not
    assert not torch.equal(opt.state_dict()["state"][0]["exp_avg"], cloned["state"][0]["exp_avg"])
    assert torch.equal(cloned["state"][0]["exp_avg"], reference["state"][0]["exp_avg"])


def test_the_summary_says_how_to_spend_less_on_evaluation_only_when_it_costs():
    """The hint names the share and the settings when evaluation took more than 5% of the
    wall time and ran during the run; not below 5%, and not when only the final evaluation
    ran (no setting would lower it)."""
    from genlab import config
    from genlab.training.summary import evaluation_hint

    train = config.load(None, ["train.eval_every=100", "train.eval_batches=16"]).train
    costly = {"wall_s": 200.0, "eval_s": 12.0}
    hint = evaluation_hint(costly, train, steps=800)
    assert hint is not None and "6.0% of the wall time" in hint
    assert "16 batches every 100 steps" in hint and "train.eval_every" in hint
    assert evaluation_hint({"wall_s": 200.0, "eval_s": 9.0}, train, steps=800) is None
    assert evaluation_hint(costly, train, steps=100) is None  # the final evaluation only
