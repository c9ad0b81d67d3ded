"""Fixtures for the export tests: tiny runs trained once per session (one per tokenizer kind,
a VAE and a GAN), all offline."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from genlab import config
from genlab.training.loop import train
from testkit import TINY

IMAGES = [
    "data.source=digits",
    "model.vae.hidden=32",
    "model.vae.latent_dim=4",
    "model.vae.arch=mlp",
    "model.gan.hidden=32",
    "model.gan.z_dim=8",
    "model.gan.arch=mlp",
    "train.batch_size=32",
    "train.eval_batches=2",
    "train.eval_every=5",
    "train.checkpoint_every=5",
    "train.sample_every=10",
    "train.progress=false",
    "schedule.warmup_steps=2",
    "guard.healthy_after=2",
    "train.max_steps=10",
]
TOKENIZERS = {"char": [], "byte": [], "bpe": ["data.vocab_size=300"]}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _train(root: Path, name: str, overrides: list[str]) -> Path:
    run = root / name
    train(config.load(None, overrides), run)
    return run


class TrainedOnDemand(Mapping[str, Path]):
    """name → run directory, each run trained the first time a test asks for it."""

    def __init__(self, root: Path, overrides: dict[str, list[str]]):
        self.root, self.overrides, self.done = root, overrides, {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.done:
            self.done[name] = _train(self.root, name, self.overrides[name])
        return self.done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.overrides)

    def __len__(self) -> int:
        return len(self.overrides)


@pytest.fixture(scope="session")
def lm_runs(tmp_path_factory: pytest.TempPathFactory) -> TrainedOnDemand:
    """A tiny GPT run per tokenizer kind (30 steps: enough to leave the uniform start)."""
    base = [*TINY, "train.max_steps=30"]
    return TrainedOnDemand(
        tmp_path_factory.mktemp("export-lm"),
        {k: [*base, f"data.tokenizer={k}", *extra] for k, extra in TOKENIZERS.items()},
    )


@pytest.fixture(scope="session")
def image_runs(tmp_path_factory: pytest.TempPathFactory) -> TrainedOnDemand:
    return TrainedOnDemand(
        tmp_path_factory.mktemp("export-images"),
        {f: [*IMAGES, f"model.family={f}"] for f in ("vae", "gan")},
    )
