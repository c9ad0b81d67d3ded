"""One call from the `finetune:` config section (`FinetuneConfig`) to a model ready to train.

    model = load_pretrained_gpt(init_from)            # or models.hf.load_hf_causal_lm(init_from)
    setup = prepare_model(model, spec, data_vocab)    # vocab, head, freezing, LoRA, unfreezing
    groups = optimizer_groups(model, spec, setup, weight_decay)

The order inside `prepare_model` matters and is fixed here so every caller gets it right:
resize the vocabulary first (the head's shape depends on it), re-initialise the head before
freezing (so the untied new head is not frozen together with the embedding it was tied to),
freeze, inject LoRA (which freezes the whole base), and build the unfreezing schedule last
(it only schedules what is still trainable). On resume, build the same base, call
`prepare_model` with the same spec, then load the run's checkpoint: the transformations are
structural, the checkpoint supplies the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_model
from torch import nn

from genlab.config import FinetuneConfig
from genlab.errors import CheckpointError, ConfigError
from genlab.finetune.freeze import (
    GradualUnfreezer,
    count_parameters,
    freeze_blocks,
    freeze_patterns,
    reinit_head,
    set_trainable,
)
from genlab.finetune.groups import trainable_param_groups
from genlab.finetune.lora import apply_lora
from genlab.finetune.vocab import match_vocab
from genlab.models.gpt import GPT


@dataclass
class FinetuneSetup:
    """What prepare_model did; `unfreezer.apply(updates)` must run before each step."""

    frozen: list[str]
    resized: bool
    trainable: int
    total: int
    unfreezer: GradualUnfreezer | None = None


def prepare_model(model: nn.Module, spec: FinetuneConfig, data_vocab: int) -> FinetuneSetup:
    """Apply the `finetune:` section to `model` in place (see the module docstring for the
    order); `data_vocab` is the vocabulary of the run's tokenizer."""
    resized = match_vocab(model, data_vocab, spec.resize_embeddings)
    head = reinit_head(model) if spec.reinit_head else None
    frozen: list[str] = []
    if spec.method == "freeze" and spec.freeze_blocks:
        frozen += freeze_blocks(model, spec.freeze_blocks, spec.freeze_embeddings)
    if spec.freeze_patterns:
        frozen += [n for n in freeze_patterns(model, spec.freeze_patterns) if n not in frozen]
    if spec.method == "lora":
        apply_lora(model, spec.lora)
        if head is not None:  # a brand-new head has to learn; LoRA froze it with the base
            set_trainable(head.parameters(), True)
    unfreezer = None
    if spec.unfreeze_every:
        unfreezer = GradualUnfreezer(model, spec.unfreeze_every, spec.unfreeze_start)
    trainable, total = count_parameters(model)
    return FinetuneSetup(frozen, resized, trainable, total, unfreezer)


def optimizer_groups(
    model: nn.Module, spec: FinetuneConfig, setup: FinetuneSetup, weight_decay: float
) -> list[dict]:
    """Param groups (trainable + scheduled-to-thaw params, each with `lr_scale`)."""
    return trainable_param_groups(
        model, weight_decay, spec.discriminative_lr_decay, unfreezer=setup.unfreezer
    )


def resolve_checkpoint(path: str | Path) -> Path:
    """A genlab checkpoint directory from `path`: a checkpoints/step-N dir, or a run
    directory (its newest healthy checkpoint)."""
    from genlab.training import checkpoint as ckpt

    p = Path(path).expanduser()
    if (p / ckpt.MANIFEST).is_file():
        return ckpt.probe(p).path  # verified: manifest, hashes, parseable files
    info = ckpt.latest(p / "checkpoints", healthy_only=True) if p.is_dir() else None
    if info is None and (p / "config.json").is_file():
        raise ConfigError(
            f"finetune.init_from {str(path)!r} is a Hugging Face model directory; set "
            "model.family=hf to fine-tune it"
        )
    if info is None:
        raise CheckpointError(
            f"finetune.init_from {str(path)!r} is neither a genlab run with a healthy "
            "checkpoint nor a checkpoints/step-N directory nor a Hugging Face model directory; "
            "point it at one of those"
        )
    return ckpt.probe(info.path).path


def load_pretrained_gpt(path: str | Path) -> GPT:
    """Build a GPT from a genlab checkpoint (its own config.yaml) and load its weights only
    (no optimizer, schedule or data position: fine-tuning starts a new run)."""
    from genlab import config as config_mod
    from genlab.models.gpt import build_gpt
    from genlab.training import checkpoint as ckpt

    ckpt_dir = resolve_checkpoint(path)
    weights = ckpt_dir / ckpt.WEIGHTS
    cfg = config_mod.load(ckpt_dir / ckpt.CONFIG, [])
    if cfg.model.family != "gpt":
        raise CheckpointError(
            f"finetune.init_from {str(path)!r} holds a {cfg.model.family!r} model; only GPT "
            "checkpoints (or Hugging Face directories) can be fine-tuned as language models"
        )
    # The vocabulary and context length are those the checkpoint was trained with; read them
    # from the weights (head/wte (V, C), wpe (block_size, C)) rather than today's data config.
    # safetensors keeps one name for a tied matrix (lm_head.weight); both names mean untied.
    with safe_open(str(weights), framework="pt") as f:
        keys = set(f.keys())
        if any("lora_" in k for k in keys):
            raise CheckpointError(
                f"checkpoint {str(ckpt_dir)!r} holds LoRA layers; merge the adapter first "
                "(finetune.merge_lora) or start from the base model's checkpoint"
            )
        vocab_key = "lm_head.weight" if "lm_head.weight" in keys else "wte.weight"
        vocab, _ = f.get_slice(vocab_key).get_shape()
        block_size, _ = f.get_slice("wpe.weight").get_shape()
    model = build_gpt(cfg.model, int(vocab), int(block_size))
    if {"wte.weight", "lm_head.weight"} <= keys:  # saved untied (e.g. after reinit_head)
        reinit_head(model)
    missing, unexpected = load_model(model, str(weights), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(ckpt_dir)!r} does not fit a GPT built from its own config: "
            f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}; it was "
            "saved by an incompatible genlab version"
        )
    return model
