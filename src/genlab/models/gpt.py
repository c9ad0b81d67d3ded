"""A GPT-style decoder-only transformer: pre-LayerNorm blocks, causal scaled-dot-product
attention, GELU MLP, tied input/output embeddings, GPT-2 init with scaled residual projections.

Shapes: B batch, T time (≤ block_size), C = n_embd, nh = n_head, hs = C // nh, V = vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from genlab.config import ModelConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        # Heads and their size are attributes (not derived from C) so structured pruning can
        # drop whole heads: then n_head * head_size < n_embd (genlab.compression.structured).
        self.n_head = config.n_head
        self.head_size = config.n_embd // config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.is_residual_out = True  # scaled init, see GPT._init_weights
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)
        # QK-LayerNorm bounds the attention logits, a common fix for attention-entropy
        # collapse and loss spikes at high learning rates.
        hs = config.n_embd // config.n_head
        self.q_norm = nn.LayerNorm(hs) if config.qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(hs) if config.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        nh, hs = self.n_head, self.head_size  # nh * hs = C unless heads were pruned
        q, k, v = self.qkv(x).split(nh * hs, dim=2)  # 3 × (B, T, nh*hs)
        # (B, T, nh*hs) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        q, k = self.q_norm(q), self.k_norm(k)
        drop = self.dropout if self.training else 0.0
        mask, causal = None, True
        if kv is not None:  # decoding: the cached tokens' keys and values come first
            causal = kv.length == 0  # nothing cached: the new tokens see only each other
            k, v, mask = kv.extend(k, v)  # (B, nh, past + T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal
        )
        y = y.transpose(1, 2).contiguous().view(B, T, nh * hs)  # re-assemble heads
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.proj.is_residual_out = True
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv)
        return x + self.mlp(self.ln2(x))


class LayerKV:
    """One block's keys and values of the tokens decoded so far: (B, nh, block_size, hs)
    buffers, allocated on first use in the keys' dtype, filled up to `length`."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def extend(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Append k, v (B, nh, T, hs); return all keys and values so far and the mask of
        the new queries (T, past + T): each sees the past and itself, not what follows. No
        mask for one new token (it sees everything) or when nothing was cached (causal)."""
        past, T = self.length, k.size(2)
        if self.buffers is None or self.buffers[0].dtype != k.dtype:
            B, nh, _, hs = k.shape
            self.buffers = (k.new_empty(B, nh, self.capacity, hs),
                            v.new_empty(B, nh, self.capacity, v.size(3)))  # fmt: skip
        keys, values = self.buffers
        keys[:, :, past : past + T] = k
        values[:, :, past : past + T] = v
        self.length = past + T
        mask = None
        if T > 1 and past:
            mask = torch.ones(T, past + T, dtype=torch.bool, device=k.device).tril(past)
        return keys[:, :, : past + T], values[:, :, : past + T], mask


class GPT(nn.Module):
    """Built from the config's `model` section (its GPT keys: n_layer, n_head, n_embd, dropout,
    bias, init, init_std, scaled_residual, qk_norm), the tokenizer's vocabulary and the
    context length (data.block_size)."""

    def __init__(self, config: ModelConfig, vocab_size: int, block_size: int):
        super().__init__()
        # Not `.config`: peft and transformers take a model's `.config` for a Hugging Face one.
        self.settings = config
        self.wte = nn.Embedding(vocab_size, config.n_embd)
        self.wpe = nn.Embedding(block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one (V, C) matrix in and out
        # Recompute each block's activations during backward instead of keeping them:
        # memory for the (B, T, C) activations of one block instead of n_layer blocks.
        self.activation_checkpointing = False
        self.apply(self._init_weights)

    @property
    def vocab_size(self) -> int:
        """Rows of the token embedding (V); a resized vocabulary shows here too."""
        return self.wte.num_embeddings

    @property
    def block_size(self) -> int:
        """The longest context the position embedding covers."""
        return self.wpe.num_embeddings

    def _init_weights(self, module: nn.Module) -> None:
        config = self.settings
        if isinstance(module, nn.Linear):
            if config.init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif config.init == "kaiming":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                nn.init.normal_(module.weight, mean=0.0, std=config.init_std)
            # Residual output projections are scaled by 1/sqrt(2·n_layer) so the residual
            # stream's variance does not grow with depth (GPT-2).
            if config.scaled_residual and getattr(module, "is_residual_out", False):
                with torch.no_grad():
                    module.weight.mul_(1.0 / math.sqrt(2 * config.n_layer))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=config.init_std)

    def forward(self, idx: torch.Tensor, cache: list[LayerKV] | None = None) -> torch.Tensor:
        """idx (B, T) int64 → logits (B, T, V). With `cache` (from `start_decoding`), idx
        holds only the tokens after those the cache has seen, at the positions after them."""
        T = idx.shape[1]
        past = cache[0].length if cache else 0
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if cache:
                x = block(x, cache[i])
            else:  # use_reentrant=False: the non-reentrant form works with DDP, frozen inputs
                x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return self.lm_head(self.ln_f(x))

    def start_decoding(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A decoder for `sample_tokens`: called with the tokens not seen yet (B, T_new), it
        returns their logits (B, T_new, V), keeping every block's keys and values so each
        new token costs one token's forward instead of the whole context's."""
        cache = [LayerKV(self.block_size) for _ in self.blocks]
        return lambda idx: self(idx, cache)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over all (B, T) targets, in nats."""
        return next_token_loss(self(idx), targets)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by sampling; temperature 0 means greedy decoding."""
        return sample_tokens(
            self, idx, self.block_size, max_new_tokens, temperature, top_k, top_p, generator
        )


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The training loss of every genlab language model: mean cross-entropy (nats, computed in
    fp32) of logits (B, T, V) against next-token targets (B, T)."""
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


@torch.no_grad()
def sample_tokens(
    model: nn.Module,
    idx: torch.Tensor,
    block_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The sampling rule every genlab language model uses (GPT and HF alike): extend idx
    (B, T) one token at a time from `model(context)` logits (B, T', V), the context cut to the
    last `block_size` tokens; temperature 0 is greedy, else top-k / top-p filtered sampling
    drawn from `generator` (so a seed gives the same sample).

    A model with `start_decoding` (GPT, HF) keeps its keys and values while the sequence
    fits in block_size and feeds only the new token; past that, the window slides, every
    position moves, and each token is computed from its whole context again, as without a
    cache. A plain callable (an exported model's logits) always gets the whole context."""
    start = getattr(model, "start_decoding", None)
    decode = start() if start is not None else None
    seen = 0  # tokens the decoder has been fed
    for _ in range(max_new_tokens):
        if decode is not None and idx.size(1) <= block_size:
            logits = decode(idx[:, seen:])[:, -1, :].float()  # (B, V)
            seen = idx.size(1)
        else:
            logits = model(idx[:, -block_size:])[:, -1, :].float()  # (B, V)
        if temperature <= 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = F.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, nxt], dim=1)
    return idx


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask logits (B, V) outside the top-k and outside the top-p nucleus with -inf."""
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token once the mass before it already reaches top_p (keeps at least one).
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def build_gpt(config: ModelConfig, vocab_size: int, block_size: int) -> GPT:
    """The GPT a run trains: from the config's `model` section (the one place runs build it,
    so a test can watch it)."""
    return GPT(config, vocab_size, block_size)
