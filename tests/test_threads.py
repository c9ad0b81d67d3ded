"""Default CPU threads are capped at the CPUs a process may use (affinity, cgroup quota), not
the machine's count; OMP_NUM_THREADS and explicit choices win."""

from __future__ import annotations

import pytest
import torch

from genlab import threads


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_explicit", None)
    yield
    torch.set_num_threads(before)


def test_cgroup_v2_and_v1_quotas_are_read(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "v1") == 2.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert threads.cgroup_cpu_limit(tmp_path / "v1") is None
    assert threads.cgroup_cpu_limit(tmp_path / "nowhere") is None


def test_available_cpus_is_the_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert threads.available_cpus(tmp_path) == 16  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("250000 100000\n")  # 2.5 CPUs
    assert threads.available_cpus(tmp_path) == 3
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0})
    assert threads.available_cpus(tmp_path) == 1


def test_use_threads_defaults_to_available_cpus_unless_told(restore_threads, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert threads.use_threads(None) == 1  # the machine may have more; this process not
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    assert threads.use_threads(None) == 1  # a lower count someone chose is never raised
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert threads.use_threads(0) == 2  # the user's OMP_NUM_THREADS stays
    assert threads.use_threads(3) == 3  # an explicit choice wins ...
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.use_threads(None) == 3  # ... and later defaults keep it
