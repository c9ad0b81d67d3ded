"""Fixtures shared by the whole suite (helpers live in testkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from testkit import TINY


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def write_config(tmp_path: Path):
    def _write(text: str, name: str = "cfg.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return _write


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one intra-op thread (and stay immune to oversubscription
    on a shared machine); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
