"""How many CPU threads torch uses, decided in one place for every command.

torch's default is the machine's core count. A process pinned to fewer cores (taskset, a job
scheduler) or limited by a container's CPU quota then runs more threads than it has CPUs, and
oversubscribed threads spin and wait on each other: a generate that takes 2 s on one thread
took 20-30 s that way. So by default the thread count is capped at the CPUs this process may
actually use: its affinity mask, capped by the cgroup's CPU quota (a lower count someone set,
e.g. `torch.set_num_threads(1)` in a notebook, is left alone). `OMP_NUM_THREADS` (set by the
user, or by torchrun for its workers) is respected, and an explicit choice (`train.threads`,
`--threads`) wins over both.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_explicit: int | None = None  # the last explicit choice in this process (kept by later defaults)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the cgroup's quota allows (e.g. 1.5), or None when it sets no limit. cgroup v2's
    `cpu.max` ("QUOTA PERIOD" or "max PERIOD"), else v1's cfs quota and period files."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for sub in ("cpu", "cpu,cpuacct"):
        try:
            quota_us = int((root / sub / "cpu.cfs_quota_us").read_text())
            period_us = int((root / sub / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count and return it: `requested` when > 0; otherwise keep
    an earlier explicit choice or `OMP_NUM_THREADS`, else cap it at `available_cpus()`."""
    import torch

    global _explicit
    if requested:
        _explicit = requested
        torch.set_num_threads(requested)
    elif _explicit is None and not os.environ.get("OMP_NUM_THREADS"):
        cap = available_cpus()
        if torch.get_num_threads() > cap:
            torch.set_num_threads(cap)
    return torch.get_num_threads()
