"""Fixtures for the fine-tuning tests: a tiny genlab GPT and a tiny local HF GPT-2 (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ftkit import BLOCK, MODEL, VOCAB

from genlab.models.gpt import GPT


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(MODEL, VOCAB, BLOCK)


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 (n_embd 32) and its byte-level BPE tokenizer, saved once per session."""
    from hfkit import make_tiny_hf_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return make_tiny_hf_model(tmp_path_factory.mktemp("tiny_hf"), vocab_size=320)
