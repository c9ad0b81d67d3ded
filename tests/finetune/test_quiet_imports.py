"""Optional dependencies import without third-party noise: peft pulls in torchao, which logs a
'Failed to load ..._C_mxfp8...so' line per GPU kernel library it cannot load, and torch's pytree
logs deprecations of torchao's registrations; genlab's `require` keeps both off the console."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest


def _stderr_of(code: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft not installed")
def test_peft_imports_through_require_without_torchao_noise():
    quiet = _stderr_of("from genlab.errors import require; require('peft', 'hf')")
    assert quiet.strip() == ""
    if importlib.util.find_spec("torchao") is not None:
        # The noise is real without require (so the assertion above can fail).
        assert "Failed to load" in _stderr_of("import peft")
