"""What the training loop needs to know about language modelling: batches with sample ids,
the loss, the validation metrics and the text samples."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from genlab.config import ExperimentConfig
from genlab.data.lm import LMData, WindowSampler, val_starts, windows
from genlab.models.gpt import GPT, build_gpt


@dataclass
class Batch:
    x: torch.Tensor  # (B, T) int64 inputs
    y: torch.Tensor  # (B, T) int64 next-token targets
    ids: list[int]  # sample ids (window slots), for the guard's skip list
    starts: list[int]  # token offsets in the train stream, for diagnoses


class LMTask:
    def __init__(self, cfg: ExperimentConfig, data: LMData, device: torch.device):
        self.cfg = cfg
        self.data = data
        self.device = device
        self.block_size = cfg.data.block_size
        self.sampler = WindowSampler(len(data.train_tokens), self.block_size, cfg.seed)
        n_val = cfg.train.eval_batches * cfg.train.batch_size
        starts = val_starts(len(data.val_tokens), self.block_size, n_val)
        self._val_x, self._val_y = windows(data.val_tokens, starts, self.block_size)
        # UTF-8 bytes each target token stands for, so bits-per-byte compares tokenizers.
        self._val_bytes = int(_token_bytes(data)[self._val_y.numpy()].sum())

    @property
    def tokens_per_sample(self) -> int:
        return self.block_size

    def build_model(self) -> GPT:
        return build_gpt(self.cfg.model, self.data.tokenizer.vocab_size, self.block_size)

    def next_batch(self, batch_size: int) -> Batch:
        ids, starts = self.sampler.next_batch(batch_size)
        x, y = windows(self.data.train_tokens, starts, self.block_size)
        return Batch(x.to(self.device), y.to(self.device), ids, starts)

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return model.loss(batch.x, batch.y)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, autocast) -> dict[str, float]:
        """Token-level mean NLL over the fixed validation windows (one mean over all tokens,
        not a mean of per-window perplexities)."""
        model.eval()
        nll_sum, n_tokens = 0.0, 0
        bs = self.cfg.train.batch_size
        for i in range(0, len(self._val_x), bs):
            x = self._val_x[i : i + bs].to(self.device)
            y = self._val_y[i : i + bs].to(self.device)
            with autocast:
                logits = model(x)
            nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"
            )
            nll_sum += nll.item()
            n_tokens += y.numel()
        model.train()
        mean = nll_sum / n_tokens
        return {
            "val/loss": mean,
            "val/perplexity": math.exp(min(mean, 700.0)),
            "val/bits_per_byte": nll_sum / (math.log(2) * self._val_bytes),
        }

    @torch.no_grad()
    def sample(self, model: torch.nn.Module, seed: int, prompt: str = "\n") -> str:
        """A text sample from a fixed prompt, with its own RNG (training RNG untouched)."""
        model.eval()
        tok = self.data.tokenizer
        idx = torch.tensor([tok.encode(prompt)], dtype=torch.long, device=self.device)
        g = torch.Generator(device=self.device).manual_seed(seed)
        out = model.generate(idx, self.cfg.train.sample_tokens, 0.8, top_k=50, generator=g)
        model.train()
        return tok.decode(out[0].tolist())

    def describe_batches(self, batches: list[Batch]) -> str:
        """Which data a failure came from: sample ids, token offsets and a text excerpt."""
        if not batches:
            return "no batch"
        last = batches[-1]
        excerpt = self.data.tokenizer.decode(
            self.data.train_tokens[last.starts[0] : last.starts[0] + 60].tolist()
        )
        return (
            f"sample ids {last.ids[:8]}{'...' if len(last.ids) > 8 else ''} at token offsets "
            f"{last.starts[:4]}... of the train split; first window begins {excerpt!r}"
        )


def _token_bytes(data: LMData) -> np.ndarray:
    tok = data.tokenizer
    if tok.kind == "byte":
        return np.ones(tok.vocab_size, dtype=np.int64)
    return np.array(
        [len(tok.decode([i]).encode("utf-8")) for i in range(tok.vocab_size)], dtype=np.int64
    )
