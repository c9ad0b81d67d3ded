"""Classification heads and pooling: what replaces a backbone's output layer for
`task: classify`.

    text:   idx (B, T) ─ LM backbone, its LM head replaced by Identity ─ hidden (B, T, C)
            ─ pool (last token | mean over the real tokens) ─ (B, C) ─ head ─ logits (B, K)
    images: x (B, C, H, W) ─ encoder trunk (VAE encoder / GAN discriminator without its last
            layer) ─ (B, F) ─ head ─ logits (B, K)

Texts are right-padded: with a causal backbone a real token never attends to the padding
after it, so pooling over the first `lengths[b]` positions sees exactly the unpadded text.
The head is freshly initialised (PyTorch's default Linear init) from the global RNG, so a
seeded run gets the same head.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from genlab.config import ClassifySection
from genlab.errors import ConfigError

Pooling = Literal["last", "mean"]


def pool(hidden: torch.Tensor, lengths: torch.Tensor, how: Pooling) -> torch.Tensor:
    """hidden (B, T, C), lengths (B,) of real tokens (>= 1) → one vector per row (B, C)."""
    if how == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, lengths - 1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    mask = (positions[None, :] < lengths[:, None]).to(hidden.dtype)  # (B, T)
    return (hidden * mask[..., None]).sum(dim=1) / lengths[:, None].to(hidden.dtype)


class ClassificationHead(nn.Module):
    """(B, F) → (B, K): dropout, then one Linear (`linear`) or Linear-GELU-Linear (`mlp`)."""

    def __init__(self, in_features: int, n_classes: int, spec: ClassifySection):
        super().__init__()
        self.dropout = nn.Dropout(spec.head_dropout)
        if spec.head == "mlp":
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_features, spec.head_hidden),
                nn.GELU(),
                nn.Linear(spec.head_hidden, n_classes),
            )
        else:
            self.net = nn.Linear(in_features, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.dropout(features))


class TextClassifier(nn.Module):
    """A language model whose LM head was replaced (`strip_lm_head`), pooling and a head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, pooling: Pooling):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pooling = pooling

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """idx (B, T) int64 right-padded, lengths (B,) → logits (B, K)."""
        hidden = self.backbone(idx)  # (B, T, C): the LM head is Identity
        return self.head(pool(hidden.float(), lengths, self.pooling))


class ImageClassifier(nn.Module):
    """An image encoder's trunk (B, C, H, W) → (B, F) and a head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) scaled as the backbone was trained → logits (B, K)."""
        return self.head(self.backbone(x))


def strip_lm_head(model: nn.Module) -> int:
    """Replace a language model's output head (genlab GPT's `lm_head`, or a Hugging Face
    model's output embeddings) by Identity, in place, so its forward returns the final hidden
    states (B, T, C); returns C. A tied head goes, the token embedding stays."""
    from genlab.finetune.freeze import output_head

    head = output_head(model)
    width = int(head.weight.shape[1])  # (V, C)
    hf = getattr(model, "hf", None)
    if hf is not None and hasattr(hf, "set_output_embeddings"):
        hf.config.tie_word_embeddings = False  # nothing may re-tie Identity to the embedding
        hf.set_output_embeddings(nn.Identity())
    elif isinstance(getattr(model, "lm_head", None), nn.Linear):
        model.lm_head = nn.Identity()
    else:
        raise ConfigError(
            f"cannot replace the output head of {type(model).__name__}; task classify needs a "
            "genlab GPT or a Hugging Face causal LM as the text backbone"
        )
    return width


def encoder_trunk(encoder: nn.Module) -> tuple[nn.Module, int]:
    """An image encoder (genlab.models.image_nets: the VAE encoder, the GAN discriminator's
    net) without its last Linear, and the width F of the features it gives (B, F)."""
    from genlab.models.image_nets import ConvEncoder, MLPEncoder

    if isinstance(encoder, MLPEncoder):  # Flatten, Linear, act, Linear, act, [Linear]
        return encoder.net[:-1], int(encoder.net[-1].in_features)
    if isinstance(encoder, ConvEncoder):  # convs (B, ch, h, w), [Linear]
        return nn.Sequential(encoder.features, nn.Flatten()), int(encoder.head.in_features)
    raise ConfigError(
        f"cannot take the features of a {type(encoder).__name__}; task classify's image "
        "backbones are genlab's VAE encoder and GAN discriminator"
    )
