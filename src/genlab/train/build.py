"""Build the model family a config asks for, with its data; and the data artifacts a run
directory keeps (tokenizer, scaler) so generation and resume use exactly what training used."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from genlab.config import IMAGE_FAMILIES, ExperimentConfig
from genlab.train.family import Family


def build_family(
    cfg: ExperimentConfig,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    run_root: Path | None = None,
) -> Family:
    """`run_root`: an existing run to take the saved tokenizer / scaler from (resume)."""
    if cfg.model.family in IMAGE_FAMILIES:
        from genlab.train.image_tasks import SCALER_FILE, build_image_family

        scaler_state = None
        if run_root is not None and (run_root / SCALER_FILE).is_file():
            scaler_state = json.loads((run_root / SCALER_FILE).read_text(encoding="utf-8"))
        return build_image_family(cfg, device, autocast, scaler_state)
    from genlab.data.lm import build_lm_data
    from genlab.data.tokenizers import load_tokenizer
    from genlab.train.lm_model import original_config, pretrained_tokenizer
    from genlab.train.lm_task import LMFamily

    if run_root is not None:
        tokenizer = load_tokenizer(run_root)
    else:
        tokenizer = pretrained_tokenizer(cfg)  # None unless fine-tuning
    data = build_lm_data(cfg.data, cfg.seed, tokenizer=tokenizer)
    original = None
    source_cfg = original_config(cfg)
    if source_cfg is not None:  # fine-tuning a genlab run: also watch its own held-out data
        original = build_lm_data(source_cfg.data, source_cfg.seed, tokenizer=data.tokenizer)
    return LMFamily(cfg, data, device, autocast, original)


def save_data_artifacts(family: Family, run_root: Path) -> None:
    if hasattr(family, "data") and hasattr(family.data, "tokenizer"):
        family.data.tokenizer.save(run_root)
        if hasattr(family.data, "write_provenance"):
            family.data.write_provenance(run_root)  # data.json: which prepared dataset
    if hasattr(family, "batches"):
        family.batches.save_scaler(run_root)
