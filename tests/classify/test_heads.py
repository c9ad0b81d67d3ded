"""Classification heads: the LM head is replaced (names and shapes), pooling reads only the
real tokens, and a right-padded row classifies exactly as the unpadded text alone."""

from __future__ import annotations

import pytest
import torch

from genlab import config
from genlab.models.heads import ClassificationHead, pool
from genlab.training.classifier_model import (
    build_image_classifier_model,
    build_text_classifier_model,
)
from testkit import TINY

TEXT = [*TINY, "task=classify", "data.source=stdlib-topics"]


def test_the_gpt_lm_head_is_replaced_by_the_classification_head():
    cfg = config.load(None, [*TEXT, "classify.head=mlp", "classify.head_hidden=16"])
    torch.manual_seed(0)
    model = build_text_classifier_model(cfg, n_classes=5, vocab_size=70).model
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert not [n for n in shapes if "lm_head" in n]  # the (V, C) output layer is gone
    assert shapes["backbone.wte.weight"] == (70, 32)  # the token embedding stays
    assert shapes["head.net.0.weight"] == (16, 32) and shapes["head.net.2.weight"] == (5, 16)
    assert shapes["head.net.2.bias"] == (5,)
    logits = model(torch.randint(0, 70, (3, 10)), torch.tensor([10, 4, 1]))
    assert logits.shape == (3, 5)


def test_image_backbones_lose_their_last_layer():
    for family, last in (("vae", "vae"), ("gan", "gan")):
        cfg = config.load(
            None,
            ["task=classify", "data.source=digits", f"model.family={family}",
             f"model.{last}.arch=mlp", f"model.{last}.hidden=24"],
        )  # fmt: skip
        model = build_image_classifier_model(cfg, 10, (1, 8, 8)).model
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        # MLP encoder: Linear(64, 24), Linear(24, 24), [Linear(24, out) dropped]
        assert shapes == {
            "backbone.1.weight": (24, 64), "backbone.1.bias": (24,),
            "backbone.3.weight": (24, 24), "backbone.3.bias": (24,),
            "head.net.weight": (10, 24), "head.net.bias": (10,),
        }  # fmt: skip


def test_pooling_against_a_loop():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    lengths = torch.tensor([5, 2, 1])
    mean = pool(hidden, lengths, "mean")
    last = pool(hidden, lengths, "last")
    for b in range(3):
        n = int(lengths[b])
        assert torch.allclose(mean[b], hidden[b, :n].mean(dim=0))
        assert torch.equal(last[b], hidden[b, n - 1])


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_a_padded_row_classifies_as_the_text_alone(pooling):
    """Right padding after a causal backbone changes nothing: the logits of a text in a
    padded batch equal those of the text run alone."""
    cfg = config.load(None, [*TEXT, f"classify.pooling={pooling}"])
    torch.manual_seed(0)
    model = build_text_classifier_model(cfg, n_classes=4, vocab_size=50).model.eval()
    texts = [torch.randint(1, 50, (n,)) for n in (9, 3, 6)]
    batch = torch.zeros(3, 9, dtype=torch.int64)
    for i, t in enumerate(texts):
        batch[i, : len(t)] = t
    together = model(batch, torch.tensor([9, 3, 6]))
    for i, t in enumerate(texts):
        alone = model(t[None], torch.tensor([len(t)]))
        assert torch.allclose(together[i], alone[0], atol=1e-5)


def test_head_dropout_applies_in_training_only():
    spec = config.ClassifySection(head_dropout=0.5)
    head = ClassificationHead(8, 2, spec)
    x = torch.ones(64, 8)
    head.eval()
    assert torch.equal(head(x), head(x))
    head.train()
    torch.manual_seed(0)
    assert not torch.equal(head(x), head(x))
