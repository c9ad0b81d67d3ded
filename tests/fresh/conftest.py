"""Fixtures of the fresh-process matrix (one per test module: each module has its own work
directory, data cache and base runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshkit import TINY_TEXT, genlab


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("fresh")
    (root / "empty.yaml").write_text("name: fresh\n")
    # ~40 documents of CPython's own docs (one per line-separated block): small enough that
    # preparing and re-splitting it costs little in every fresh process.
    docs = [topics[k].strip() for k in sorted(topics)[:40]]
    (root / "corpus.txt").write_text("\n\n\n".join(docs) + "\n")
    return root


@pytest.fixture(scope="module")
def hf_model(workdir: Path) -> Path:
    """A tiny local GPT-2 and its byte-level BPE tokenizer (test data, built once)."""
    from hfkit import make_tiny_hf_model

    return make_tiny_hf_model(workdir / "tiny-hf", vocab_size=320)


@pytest.fixture(scope="module")
def base_gpt(workdir: Path) -> Path:
    """A genlab GPT run to fine-tune from (trained by the real command too)."""
    run = workdir / "base-gpt"
    genlab("train", "empty.yaml", *TINY_TEXT, "train.max_steps=10", "--run-dir", run, cwd=workdir)
    return run
