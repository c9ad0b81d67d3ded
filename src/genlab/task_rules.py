"""The schema's cross-section rules for `task:` (checked by ExperimentConfig at load time, so
a config that cannot work fails before anything runs, one line each: key, value, fix).

`task: classify` trains a classifier on a backbone from `model.family`; settings that only
make sense for generative training, or for the other kind of backbone, are errors rather than
silently ignored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from genlab.data.sources import BUILTIN_TEXT_CORPORA, LABELLED_CORPORA

if TYPE_CHECKING:
    from genlab.config import ExperimentConfig

RECORD_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
TEXT_BACKBONES = ("gpt", "hf")


def check_task(cfg: ExperimentConfig) -> str | None:
    """The first problem with the task's settings, or None."""
    cv = cfg.tune.cv
    labelled = cfg.task == "classify" or cfg.data.label_field is not None
    if cv.kind == "stratified" and cv.folds and not labelled:
        return (
            "tune.cv.kind 'stratified' needs class labels, and text data has none unless "
            "task is classify or data.label_field is set; use cv.kind: kfold"
        )
    if cfg.task == "generate":
        changed = _changed(cfg.classify)
        if changed:
            key = changed[0]
            return (
                f"classify.{key} applies to task classify, got task 'generate'; set "
                "task: classify or remove the classify section"
            )
        return None
    return _classify_problem(cfg)


def _classify_problem(cfg: ExperimentConfig) -> str | None:
    family, source, ft, train = cfg.model.family, cfg.data.source, cfg.finetune, cfg.train
    changed = _changed(cfg.classify)
    if family in TEXT_BACKBONES:
        if source in BUILTIN_TEXT_CORPORA and source not in LABELLED_CORPORA:
            return (
                f"data.source {source!r} has no labels, and task classify learns them; use "
                f"data.source={LABELLED_CORPORA[0]}, a .csv/.jsonl with data.label_field, or a "
                "folder with one sub-folder of .txt files per class"
            )
        if Path(source).suffix.lower() in RECORD_SUFFIXES and cfg.data.label_field is None:
            return (
                f"task classify reads each record's class from data.label_field, which is not "
                f"set for data.source {source[:60]!r}; set data.label_field to that column"
            )
    else:
        if "pooling" in changed:
            return (
                f"classify.pooling turns a text's hidden states into one vector; a "
                f"model.family {family!r} encoder gives one already; remove classify.pooling"
            )
        image_only = {
            "method lora": ft.method == "lora",
            "freeze_blocks": ft.freeze_blocks > 0,
            "unfreeze_every": ft.unfreeze_every > 0,
            "discriminative_lr_decay": ft.discriminative_lr_decay != 1.0,
        }
        bad = next((k for k, v in image_only.items() if v), None)
        if bad:
            return (
                f"finetune.{bad} works on a transformer's blocks, not on a model.family "
                f"{family!r} encoder; use finetune.method=freeze (the whole encoder) or full"
            )
    unused = {
        "finetune.reinit_head": ft.reinit_head,  # the classification head is always new
        "finetune.merge_lora": ft.merge_lora,
        "train.ema_decay": train.ema_decay > 0,
        "train.activation_checkpointing": train.activation_checkpointing,
    }
    key = next((k for k, v in unused.items() if v), None)
    if key:
        return f"{key} does not apply to task classify; remove it"
    if train.grad_accum > 1:
        return (
            f"train.grad_accum={train.grad_accum} splits language-model batches, not task "
            "classify's; set train.grad_accum=1 (lower train.batch_size to save memory)"
        )
    if train.strategy in ("fsdp", "pipeline"):
        return (
            f"train.strategy={train.strategy} shards transformer blocks for generative "
            "training; task classify runs with train.strategy=ddp or none"
        )
    return None


def _changed(section: BaseModel) -> list[str]:
    """The keys of `section` that differ from their defaults (a run's config.yaml writes every
    key, so "was it written" cannot tell a choice from a default)."""
    return [
        name
        for name, field in type(section).model_fields.items()
        if getattr(section, name) != field.get_default(call_default_factory=True)
    ]
