"""Build the classifier a `task: classify` config asks for: a backbone (fresh, or from
finetune.init_from) with a fresh classification head. Training, resume, `genlab eval` and
`genlab predict` all build through here, so a run reloads into the structure it was saved
from (LoRA layers, frozen layers and all) before its checkpoint supplies the weights.

    text  (model.family gpt | hf): a genlab GPT (fresh, or a genlab run's) or a local Hugging
          Face causal LM; finetune.method full | freeze | lora is applied to it as for
          language-model fine-tuning, then its LM head is replaced (models/heads.py).
    images (model.family vae | gan): the VAE encoder or the GAN discriminator, fresh (built
          from model.vae / model.gan) or a genlab VAE / GAN run's; finetune.method freeze
          freezes the whole encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from genlab.config import DataConfig, ExperimentConfig
from genlab.errors import ConfigError
from genlab.models.heads import (
    ClassificationHead,
    ImageClassifier,
    TextClassifier,
    encoder_trunk,
    strip_lm_head,
)

DIGITS_SHAPE = (1, 8, 8)  # scikit-learn's digits (genlab.data.images.load_digits_images)


@dataclass
class ClassifierModel:
    model: nn.Module
    setup: object | None = None  # genlab.finetune.FinetuneSetup for text fine-tuning
    groups: list[dict] | None = None  # optimizer param groups (discriminative lr), or None


def image_shape_of(data: DataConfig) -> tuple[int, int, int]:
    """(C, H, W) of the images a data section yields (an image folder is resized to it)."""
    if data.source == "digits":
        return DIGITS_SHAPE
    return (data.channels, data.image_size, data.image_size)


def build_text_classifier_model(
    cfg: ExperimentConfig, n_classes: int, vocab_size: int
) -> ClassifierModel:
    """The text backbone (finetune section applied) with its LM head replaced by the head."""
    from genlab.models.gpt import build_gpt

    ft, setup = cfg.finetune, None
    if ft.init_from is None:
        backbone = build_gpt(cfg.model, vocab_size, cfg.data.block_size)
    else:
        from genlab.finetune import prepare_model
        from genlab.training.lm_model import load_pretrained_lm

        backbone = load_pretrained_lm(cfg)
        # Vocabulary, freezing, LoRA, unfreezing schedule: before the head goes, so that
        # resizing a tied vocabulary still finds its head.
        setup = prepare_model(backbone, ft, vocab_size)
    width = strip_lm_head(backbone)
    head = ClassificationHead(width, n_classes, cfg.classify)
    model = TextClassifier(backbone, head, cfg.classify.pooling)
    groups = None
    if setup is not None:
        from genlab.finetune import optimizer_groups

        groups = optimizer_groups(model, ft, setup, cfg.optim.weight_decay)  # head: top lr
    return ClassifierModel(model, setup, groups)


def build_image_classifier_model(
    cfg: ExperimentConfig, n_classes: int, image_shape: tuple[int, int, int]
) -> ClassifierModel:
    """The image encoder's trunk (frozen for finetune.method freeze) and the head."""
    from genlab.finetune import freeze_patterns, set_trainable

    ft = cfg.finetune
    if ft.init_from is None:
        encoder = _fresh_encoder(cfg, image_shape)[1]
    else:
        encoder = _pretrained_encoder(cfg, image_shape)
    trunk, width = encoder_trunk(encoder)
    if ft.method == "freeze":
        set_trainable(trunk.parameters(), False)
    model = ImageClassifier(trunk, ClassificationHead(width, n_classes, cfg.classify))
    if ft.freeze_patterns:
        freeze_patterns(model, ft.freeze_patterns)
    return ClassifierModel(model)


def _fresh_encoder(
    cfg: ExperimentConfig, image_shape: tuple[int, int, int]
) -> tuple[dict[str, nn.Module], nn.Module]:
    """The family's whole network as its checkpoint names it, and its encoder: the VAE
    (checkpoint key `model`) and its encoder, or the discriminator and its net."""
    if cfg.model.family == "vae":
        from genlab.models.vae import VAE

        vae = VAE(image_shape, cfg.model.vae)
        return {"model": vae}, vae.encoder
    from genlab.models.gan import Discriminator

    disc = Discriminator(image_shape, cfg.model.gan)
    return {"discriminator": disc}, disc.net


def source_image_run(cfg: ExperimentConfig) -> tuple[ExperimentConfig, Path]:
    """The config and checkpoint of the VAE / GAN run finetune.init_from names."""
    from genlab import config as config_mod
    from genlab.finetune import resolve_checkpoint

    init = str(cfg.finetune.init_from)
    ckpt_dir = resolve_checkpoint(init)
    source = config_mod.load(ckpt_dir / "config.yaml")
    if source.task != "generate" or source.model.family != cfg.model.family:
        raise ConfigError(
            f"finetune.init_from {init[:80]!r} is a {source.task} run of model.family "
            f"{source.model.family!r}; an image classifier with model.family "
            f"{cfg.model.family!r} starts from a generative run of that family (set "
            "model.family to match, or point init_from at such a run)"
        )
    return source, ckpt_dir


def _pretrained_encoder(cfg: ExperimentConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    from genlab.training import checkpoint as ckpt

    source, ckpt_dir = source_image_run(cfg)
    trained_on = image_shape_of(source.data)
    if trained_on != image_shape:
        raise ConfigError(
            f"finetune.init_from's {cfg.model.family} was trained on images of (C, H, W) "
            f"{trained_on}, but data.source gives {image_shape}; set data.image_size / "
            "data.channels to match"
        )
    modules, encoder = _fresh_encoder(source, image_shape)  # the source's own architecture
    ckpt.load_checkpoint(ckpt_dir, modules)  # verified: manifest, hashes, shapes
    return encoder
