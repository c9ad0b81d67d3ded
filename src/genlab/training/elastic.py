"""Elastic recovery: a run whose process died comes back by itself.

Under genlab's launcher with `--max-restarts K` (launch.py), torchrun's elastic agent restarts
the whole group when a worker dies; every restarted worker sees TORCHELASTIC_RESTART_COUNT > 0
(with c10d rendezvous a node restarted for another node's failure may not, so the ranks agree:
any restarted rank makes it a restart). A restarted `genlab train` then resumes its run
directory from the newest healthy checkpoint of the same config, or starts over when there is
none yet; a restarted `genlab resume` resumes again. The restart is an event in events.jsonl.

The launcher checked the run directory before the first attempt, so a restart may take over
what that attempt wrote. Plain `torchrun` did not: there a restarted `genlab train` treats its
run directory as any new run (`-m genlab.cli resume RUN_DIR` is the command to restart).

Errors that a restart cannot fix (a user error, exit 2; a guard abort, exit 3) are written to
the launcher's state directory and repeated at once by the restarted workers instead of
running the same failure again.

`guard.inject` kind `crash` is the drill: process `rank` dies abruptly (SIGKILL) at the start
of `step`, once per run directory (`faults.jsonl` records that it fired).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError

RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"
LAUNCH_STATE = "GENLAB_LAUNCH_STATE"  # set by genlab's launcher: a directory per node
FIRED = "faults.jsonl"  # in the run directory: injected faults that already fired
_EXIT_FILE = "exit-code"


def restart_count() -> int:
    """This process's restart number (0: the first attempt, or not under the elastic agent)."""
    try:
        return max(0, int(os.environ.get(RESTART_COUNT, "0")))
    except ValueError:
        return 0


def launched_by_genlab() -> bool:
    return bool(os.environ.get(LAUNCH_STATE))


def is_restart(rt: Any) -> bool:
    """Collective: whether any rank of the group is a restarted worker."""
    return rt.all_reduce_mean(float(restart_count())) > 0


def record_exit(code: int) -> None:
    """A worker stopping with exit code `code` (2 or 3) that a restart would only repeat."""
    state = os.environ.get(LAUNCH_STATE)
    if state and Path(state).is_dir():
        (Path(state) / _EXIT_FILE).write_text(str(code), encoding="ascii")


def recorded_exit() -> int | None:
    """The exit code a previous attempt recorded, for a restarted worker to repeat."""
    state = os.environ.get(LAUNCH_STATE)
    if not state or restart_count() == 0:
        return None
    try:
        return int((Path(state) / _EXIT_FILE).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None


def restart_point(run_root: Path, cfg: Any) -> Any:
    """Where a restarted `genlab train` continues: `resumable.check_resumable`'s answer when the run
    directory holds this config's run with a complete checkpoint, else None (start over)."""
    from genlab.training import precision
    from genlab.training.checkpoint import list_checkpoints
    from genlab.training.resumable import check_resumable

    config = run_root / "config.yaml"
    if not config.is_file():
        return None
    saved = config.read_text(encoding="utf-8")
    if cfg.train.precision == "auto":  # the run's config.yaml names what auto chose
        cfg = precision.with_precision(cfg, _recorded_precision(saved) or "auto")
    if saved != cfg.to_yaml():
        return None
    if not list_checkpoints(run_root / "checkpoints"):
        return None
    return check_resumable(run_root)


def _recorded_precision(config_yaml: str) -> str | None:
    import yaml

    from genlab import safe_yaml
    from genlab.errors import ConfigError

    try:
        value = (safe_yaml.load(config_yaml, "config.yaml") or {}).get("train", {}).get("precision")
    except (yaml.YAMLError, AttributeError, ConfigError):  # damaged: not this config's run
        return None
    return value if value in ("fp32", "bf16", "fp16") else None


def before_start_over(run_root: Path) -> tuple[bytes | None, float]:
    """What a restart that starts over in `run_root` keeps: faults.jsonl (a fired crash stays
    fired) and the seconds the failed attempt logged (lost to the restart)."""
    from genlab.track.logs import read_jsonl

    fired = run_root / FIRED
    times = [r.get("time") for r in read_jsonl(run_root / "metrics.jsonl")]
    logged = max((t for t in times if isinstance(t, (int, float))), default=0.0)
    return (fired.read_bytes() if fired.is_file() else None), float(logged)


def write_fired(run_root: Path, data: bytes | None) -> None:
    """Put faults.jsonl back after starting over."""
    if data:
        (run_root / FIRED).write_bytes(data)


def restart_event(step: int, restart: int, origin: str, lost: float) -> dict[str, Any]:
    """events.jsonl's record of an elastic restart that resumed at `step` from `origin`."""
    detail = {"restart": restart, "from": origin, "lost_s": round(lost, 3)}
    return {"step": step, "kind": "restart", "action": "resume", "detail": detail}


def check_crash_ranks(faults: list[Any], world_size: int) -> None:
    bad = [f for f in faults if f.kind == "crash" and f.rank >= world_size]
    if bad:
        raise ConfigError(
            f"guard.inject crash at step {bad[0].step} names rank {bad[0].rank}, but the run has "
            f"{world_size} process(es); use a rank in 0..{world_size - 1}"
        )


class CrashDrill:
    """`guard.inject` crashes planned for this rank that have not fired in this run dir."""

    def __init__(self, faults: list[Any], rank: int, run_root: Path):
        self.log = run_root / FIRED
        fired = {r.get("step") for r in _read(self.log) if r.get("rank") == rank}
        self.steps = {f.step for f in faults if f.kind == "crash" and f.rank == rank} - fired
        self.rank = rank

    def at(self, step: int) -> None:
        """Die now if a crash is planned for `step`, after recording that it fired."""
        if step not in self.steps:
            return
        line = json.dumps({"step": step, "kind": "crash", "rank": self.rank}) + "\n"
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _read(path: Path) -> list[dict[str, Any]]:
    from genlab.track.logs import read_jsonl

    return read_jsonl(path)
