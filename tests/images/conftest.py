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


@pytest.fixture
def image_batches():
    """Build the training loop's `ImageBatches` for a VAE on the bundled digits (64 a batch,
    10% val, 10% test) with extra config overrides."""
    from rich.console import Console

    from genlab import config
    from genlab.training.image_tasks import ImageBatches

    def build(*overrides: str) -> ImageBatches:
        base = ["data.source=digits", "model.family=vae", "train.batch_size=64"]
        cfg = config.load(None, [*base, "data.split.val=0.1", "data.split.test=0.1", *overrides])
        return ImageBatches(cfg, torch.device("cpu"), None, Console(quiet=True))

    return build
