"""Build the model family a config asks for, with its data; and the data artifacts a run
directory keeps (tokenizer, scaler) so generation and resume use exactly what training used.

`FAMILIES` lists every `model.family` and the builder that makes it, imported on lookup;
`CLASSIFIERS` the same for `task: classify`, where model.family names the backbone; `TASKS`
says which table a task's families come from."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from genlab.config import ExperimentConfig
from genlab.registry import Registry
from genlab.training.family import Family

# model.family -> build(cfg, device, autocast, run_root) -> Family
FAMILIES = Registry(
    "model family",
    {
        "gpt": "genlab.training.lm_task:build_lm_family",
        "hf": "genlab.training.lm_task:build_lm_family",
        "vae": "genlab.training.image_tasks:build_image_family",
        "gan": "genlab.training.image_tasks:build_image_family",
    },
)

# task classify: model.family (the backbone) -> build(cfg, device, autocast, run_root) -> Family
CLASSIFIERS = Registry(
    "classifier backbone",
    {
        "gpt": "genlab.training.classify_task:build_text_classifier",
        "hf": "genlab.training.classify_task:build_text_classifier",
        "vae": "genlab.training.classify_task:build_image_classifier",
        "gan": "genlab.training.classify_task:build_image_classifier",
    },
)
TASKS = {"generate": FAMILIES, "classify": CLASSIFIERS}  # task -> its families


def build_family(
    cfg: ExperimentConfig,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    run_root: Path | None = None,
) -> Family:
    """`run_root`: an existing run to take the saved tokenizer / scaler from (resume, eval)."""
    build = TASKS[cfg.task].lookup(cfg.model.family, where="model.family")
    family = build(cfg, device, autocast, run_root)
    if cfg.compress.recover_from is not None:  # genlab compress's recovery run: pruned, masked
        from genlab.compression.recovery import recovering_family

        family = recovering_family(family, cfg)
    return family


def save_data_artifacts(family: Family, run_root: Path) -> None:
    """What a run keeps of its data: the tokenizer and data.json (LMs), scaler.json (images)."""
    family.save_data_artifacts(run_root)
