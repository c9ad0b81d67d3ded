"""Fixtures shared by the whole suite (helpers live in testkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
