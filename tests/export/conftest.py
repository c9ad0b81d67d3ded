"""Fixtures for the export tests: tiny runs trained once per session (one per tokenizer kind,
a VAE and a GAN), all offline."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from freshkit import TINY_IMAGES
from genlab import config
from genlab.training.loop import train
from testkit import TINY

# The fresh matrix's tiny VAE/GAN on digits, trained for 10 steps.
IMAGES = [*TINY_IMAGES, "train.max_steps=10"]
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
