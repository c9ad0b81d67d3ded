"""Helpers for the export tests: tiny trained runs, the genlab-side reference numbers, and a
fresh interpreter that loads an export WITHOUT genlab (it asserts genlab was never imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab.data.prepare import DOC_SEPARATOR
from genlab.evaluation.run import held_out_documents, load_run_model

GENLAB = str(Path(sys.executable).with_name("genlab"))
GREEDY_TOKENS = 64
NO_GENLAB = """
import sys as _sys
_loaded = sorted(m for m in _sys.modules if m == "genlab" or m.startswith("genlab."))
assert not _loaded, f"the export needed genlab: {_loaded}"
"""


def fresh_python(script: str, payload: dict, timeout: int = 240) -> dict:
    """Run `script` in a new interpreter with `payload` as JSON in argv[1]; it prints one JSON
    object as its last line. Fails if the script imported genlab."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script + NO_GENLAB, json.dumps(payload)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def genlab_cli(
    *args: object, cwd: Path, extra_env: dict | None = None
) -> subprocess.CompletedProcess:
    """The real `genlab` command in a new process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    return subprocess.run(
        [GENLAB, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


@dataclass
class Reference:
    """What genlab itself computes for a run, for an export loaded elsewhere to match."""

    windows: list[list[int]]  # (N, T) held-out input ids
    logits_file: str  # .npy of the genlab model's logits (N, T, V)
    prompts: list[str]  # held-out text prompts
    prompt_ids: list[list[int]]  # genlab's ids for them
    greedy_texts: list[str]  # genlab's greedy continuations (GREEDY_TOKENS tokens), decoded
    block_size: int

    def payload(self) -> dict:
        return self.__dict__.copy()


@torch.no_grad()
def lm_reference(
    run_dir: Path, out: Path, length: int | None = None, n_windows: int = 3
) -> Reference:
    """genlab's numbers for `run_dir`: logits on held-out windows of `length` tokens (default:
    the context) and greedy continuations of 5 held-out prompts, by genlab's own `generate`."""
    loaded = load_run_model(run_dir, device="cpu")
    docs = held_out_documents(loaded.cfg, "val", loaded.run.root)
    spec = getattr(loaded.model, "spec", None)  # genlab GPT; an HF-family model has block_size
    block = spec.block_size if spec is not None else loaded.model.block_size
    length = length or block
    tokens = loaded.tokenizer.encode(DOC_SEPARATOR.join(d.text for d in docs))
    starts = np.linspace(0, len(tokens) - length - 1, n_windows).astype(int)
    windows = [tokens[s : s + length] for s in starts]
    logits = loaded.model(torch.tensor(windows)).numpy()
    out.mkdir(parents=True, exist_ok=True)
    logits_file = out / f"logits-{length}.npy"
    np.save(logits_file, logits)
    picks = np.linspace(0, len(docs) - 1, 5).astype(int)
    prompts = [docs[i].text[:10] for i in picks]
    prompt_ids = [loaded.tokenizer.encode(p) for p in prompts]
    texts = []
    for ids in prompt_ids:
        y = loaded.model.generate(torch.tensor([ids]), GREEDY_TOKENS, temperature=0.0)
        texts.append(loaded.tokenizer.decode(y[0, len(ids) :].tolist()))
    return Reference(windows, str(logits_file), prompts, prompt_ids, texts, block)
