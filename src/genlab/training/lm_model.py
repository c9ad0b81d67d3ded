"""Build the language model a config asks for: a fresh GPT, or a pretrained model (a genlab
run's GPT or a local Hugging Face causal LM) prepared for fine-tuning (vocabulary, head,
freezing, LoRA, layer-wise unfreezing). Training, resume, evaluation and generation all build
through here, so a fine-tuned run always reloads into the same structure it was saved from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from genlab.config import ExperimentConfig
from genlab.data.tokenizers import Tokenizer, load_tokenizer
from genlab.errors import ConfigError
from genlab.models.gpt import build_gpt


@dataclass
class LMModel:
    model: nn.Module
    setup: object | None = None  # genlab.finetune.FinetuneSetup when fine-tuning
    groups: list[dict] | None = None  # optimizer param groups (fine-tuning: lr_scale each)


def pretrained_tokenizer(cfg: ExperimentConfig) -> Tokenizer | None:
    """The tokenizer the pretrained model was trained with (None when not fine-tuning): a new
    tokenizer would give the same ids different meanings."""
    init = cfg.finetune.init_from
    if init is None:
        return None
    if cfg.model.family == "hf":
        from genlab.models.hf import load_hf_tokenizer

        return load_hf_tokenizer(init)
    return load_tokenizer(run_root_of(init))


def original_config(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The config a genlab starting point was trained with (its data and seed give its
    held-out split, to measure forgetting); None when not fine-tuning a genlab run."""
    init = cfg.finetune.init_from
    if init is None or cfg.model.family == "hf":
        return None
    from genlab import config as config_mod
    from genlab.finetune import resolve_checkpoint

    return config_mod.load(resolve_checkpoint(init) / "config.yaml")


def build_lm_model(cfg: ExperimentConfig, vocab_size: int) -> LMModel:
    ft = cfg.finetune
    if ft.init_from is None:
        return LMModel(build_gpt(cfg.model, vocab_size, cfg.data.block_size))
    from genlab.finetune import optimizer_groups, prepare_model

    model = load_pretrained_lm(cfg)
    setup = prepare_model(model, ft, vocab_size)
    groups = optimizer_groups(model, ft, setup, cfg.optim.weight_decay)
    return LMModel(model, setup, groups)


def load_pretrained_lm(cfg: ExperimentConfig) -> nn.Module:
    """The language model finetune.init_from holds (a genlab GPT run or checkpoint, or a local
    Hugging Face model with model.family hf), checked against data.block_size."""
    from genlab.finetune import load_pretrained_gpt

    ft = cfg.finetune
    if cfg.model.family == "hf":
        from genlab.models.hf import load_hf_causal_lm

        model = load_hf_causal_lm(ft.init_from)
    else:  # a Hugging Face directory here is refused by resolve_checkpoint (model.family=hf)
        model = load_pretrained_gpt(ft.init_from)
    limit = model.block_size
    if cfg.data.block_size > limit:
        raise ConfigError(
            f"data.block_size={cfg.data.block_size} is longer than the pretrained model's "
            f"context ({limit}); set data.block_size={limit} or less"
        )
    return model


def run_root_of(init_from: str) -> Path:
    """The run directory of finetune.init_from (a run, or one of its checkpoints)."""
    from genlab.finetune import resolve_checkpoint

    ckpt_dir = resolve_checkpoint(init_from)
    return ckpt_dir.parent.parent  # runs/x/checkpoints/step-N → runs/x
