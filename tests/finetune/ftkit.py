"""Helpers shared by the fine-tuning tests."""

from __future__ import annotations

import torch

from genlab.config import ModelConfig

# The tiny GPT of these tests: its model section, vocabulary and context length.
MODEL = ModelConfig(n_layer=2, n_head=2, n_embd=32)
VOCAB, BLOCK = 50, 16


def batches(vocab: int, n: int, seed: int = 0, b: int = 4, t: int = 12) -> list[tuple]:
    """n fixed (x, y) batches of random tokens, y = x shifted by one."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        seq = torch.randint(0, vocab, (b, t + 1), generator=g)
        out.append((seq[:, :-1], seq[:, 1:]))
    return out


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_steps(model, optimizer, data, before_step=None) -> list[float]:
    losses = []
    for i, (x, y) in enumerate(data):
        if before_step is not None:
            before_step(i)
        loss = model.loss(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses
