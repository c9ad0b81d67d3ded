"""task classify on a Hugging Face backbone: its LM head is replaced by the classification
head (the session's tiny GPT-2 from conftest)."""

from __future__ import annotations

import torch

from genlab import config
from genlab.training.classifier_model import build_text_classifier_model
from testkit import TINY


def test_a_classifier_replaces_the_hf_lm_head(tiny_hf_dir):
    hf = tiny_hf_dir
    cfg = config.load(
        None,
        [
            *TINY,
            "task=classify",
            "data.source=stdlib-topics",
            "model.family=hf",
            f"finetune.init_from={hf}",
        ],
    )
    model = build_text_classifier_model(cfg, n_classes=3, vocab_size=320).model
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "lm_head" in n]
    assert "backbone.hf.transformer.wte.weight" in names  # GPT-2's embedding, kept
    assert dict(model.named_parameters())["head.net.weight"].shape == (3, 32)
    assert model(torch.randint(0, 320, (2, 6)), torch.tensor([6, 2])).shape == (2, 3)
