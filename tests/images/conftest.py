"""Image tests use tiny models: one intra-op thread is faster than two (and immune to
oversubscription when the machine is shared), so pin it here and restore it afterwards."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
