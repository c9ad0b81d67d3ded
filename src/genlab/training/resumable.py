"""Which checkpoint a resume starts from, checked before any work: `genlab resume`, the
launcher's check before it starts workers, and a restarted worker (elastic.py) ask here."""

from __future__ import annotations

from pathlib import Path

from genlab import config as config_mod
from genlab.config import ExperimentConfig
from genlab.errors import CheckpointError
from genlab.track.rundir import RunDir, load_run_config, open_existing
from genlab.training import checkpoint as ckpt


def check_resumable(
    run_dir: Path, overrides: list[str] | None = None
) -> tuple[RunDir, ExperimentConfig, ckpt.CheckpointInfo, list[str]]:
    """The run, its config with `overrides`, the checkpoint a resume starts from (the newest
    healthy one that loads, else the newest that loads) and the checkpoints passed over as
    unusable; a one-line error when the run cannot be resumed. Writes nothing."""
    run = open_existing(Path(run_dir))
    saved = load_run_config(run)
    cfg = load_run_config(run, overrides)
    changed = config_mod.architecture_changes(saved, cfg)
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise CheckpointError(
            f"resume cannot change {changed[0]}{more}: "
            "the checkpoints hold tensors of the run's shapes; drop that override, or train a "
            "new run (finetune.init_from can start it from this one)"
        )
    found = ckpt.scan(run.checkpoints)
    if not found:
        raise CheckpointError(
            f"run {str(run_dir)!r} has no checkpoint to resume from (a run stopped before its "
            f"first one); start it again with `genlab train {run.config} --run-dir {run_dir} "
            "--overwrite`"
        )
    newest_first = found[::-1]
    healthy = [f for f in newest_first if isinstance(f[1], ckpt.CheckpointInfo) and f[1].healthy]
    start, skipped = ckpt.first_usable(healthy + [f for f in newest_first if f not in healthy])
    if start is None:
        raise CheckpointError(
            f"no checkpoint of run {str(run_dir)!r} can be loaded ({len(skipped)} checked; "
            f"newest: {skipped[0][:150]}); train the run again with --overwrite"
        )
    if start.step >= cfg.train.max_steps:
        raise CheckpointError(
            f"run {str(run_dir)!r} already reached step {start.step} of train.max_steps="
            f"{cfg.train.max_steps}; resume with a larger value, e.g. "
            f"train.max_steps={cfg.train.max_steps * 2}"
        )
    return run, cfg, start, skipped
