"""Transfer learning: freeze the bottom of a pretrained model, re-initialise its head, and
unfreeze it again gradually.

Works on genlab's GPT and on Hugging Face causal LMs (`HFCausalLM` or a bare PreTrainedModel)
without branching on the family where it can be avoided:

- the transformer blocks are the model's largest `nn.ModuleList` (GPT: `blocks`, GPT-2:
  `transformer.h`, Llama: `model.layers`);
- the embeddings are every `nn.Embedding` outside those blocks (token and position tables).

A frozen parameter has `requires_grad=False`: it gets no gradient, so AdamW neither updates nor
decays it and never creates state for it. Note that genlab's GPT ties `lm_head` to `wte`:
freezing the embeddings freezes that head too, unless `reinit_head` unties it first.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence

from torch import nn

from genlab.errors import ConfigError


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks: its largest nn.ModuleList."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):  # genlab GPT: no search needed
        return blocks
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ConfigError(
            f"cannot find transformer blocks in {type(model).__name__} (it has no nn.ModuleList)"
            "; use finetune.freeze_patterns to name the parameters to freeze instead"
        )
    return max(lists, key=len)  # first of the longest on ties: the outermost stack


def embedding_modules(model: nn.Module) -> list[nn.Embedding]:
    """Every nn.Embedding outside the transformer blocks (token and position tables)."""
    inside = {id(m) for m in find_blocks(model).modules()}
    return [m for m in model.modules() if isinstance(m, nn.Embedding) and id(m) not in inside]


def set_trainable(params: Iterable[nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)


def freeze_blocks(model: nn.Module, n_blocks: int, embeddings: bool = True) -> list[str]:
    """Freeze the embeddings (if `embeddings`) and the first `n_blocks` blocks (bottom-up).

    Returns the names of the parameters now frozen."""
    blocks = find_blocks(model)
    if not 0 <= n_blocks <= len(blocks):
        raise ConfigError(
            f"finetune.freeze_blocks must be between 0 and the model's {len(blocks)} blocks, "
            f"got {n_blocks}; use {len(blocks)} to train only the head"
        )
    modules: list[nn.Module] = list(blocks[:n_blocks])
    if embeddings:
        modules += embedding_modules(model)
    frozen = {id(p) for m in modules for p in m.parameters()}
    set_trainable((p for m in modules for p in m.parameters()), False)
    return [n for n, p in model.named_parameters() if id(p) in frozen]


def freeze_patterns(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Freeze every parameter whose name matches one of the fnmatch `patterns`
    (e.g. "wte.*", "blocks.[01].*", "hf.transformer.h.0.*"). A pattern that matches nothing
    is an error: it is almost always a typo."""
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    frozen: list[str] = []
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise ConfigError(
                f"finetune.freeze_patterns entry {pattern!r} matches no parameter; parameter "
                f"names look like {names[:3]} (fnmatch syntax: * ? [seq])"
            )
        frozen += [n for n in hits if n not in frozen]
    params = dict(model.named_parameters(remove_duplicate=False))
    set_trainable((params[n] for n in frozen), False)
    return frozen


def output_head(model: nn.Module) -> nn.Module:
    """The output projection (V rows): GPT's lm_head, or the HF model's output embeddings."""
    hf = getattr(model, "hf", model)
    if hasattr(hf, "get_output_embeddings") and hf.get_output_embeddings() is not None:
        return hf.get_output_embeddings()
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"cannot find the output head of {type(model).__name__}; set finetune.reinit_head: "
            "false"
        )
    return head


def reinit_head(model: nn.Module, std: float | None = None) -> nn.Linear:
    """Replace the output head with a freshly initialised, trainable, UNTIED Linear.

    genlab's GPT (and GPT-2) tie the head to the token embedding; re-initialising a tied head
    would also wipe the pretrained embedding, so the new head gets its own matrix and the HF
    config is told not to re-tie it on save/reload. Initialisation: N(0, std) with std the
    model's own init std (GPT model.init_std, HF config.initializer_range) unless given.
    Uses the global torch RNG (seed it first for a reproducible head).
    """
    old = output_head(model)
    hf = getattr(model, "hf", model)  # the PreTrainedModel, if this is an HF model
    if not hasattr(hf, "set_output_embeddings"):
        hf = None
    if std is None:
        settings = getattr(model, "settings", None)  # a genlab GPT's model section
        std = getattr(settings, "init_std", None) or getattr(
            getattr(hf, "config", None), "initializer_range", 0.02
        )
    weight = old.weight  # (V, C)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=getattr(old, "bias", None) is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    nn.init.normal_(new.weight, mean=0.0, std=std)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    if hf is not None:
        hf.config.tie_word_embeddings = False
        if hasattr(hf.config, "get_text_config"):  # composite configs keep the flag per part
            hf.config.get_text_config().tie_word_embeddings = False
        hf.set_output_embeddings(new)
    else:
        model.lm_head = new
    return new


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied matrix counts once."""
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    return trainable, total


class GradualUnfreezer:
    """Layer-wise unfreezing (ULMFiT-style): start with the head plus the top `start` blocks
    trainable; every `every` steps one more block becomes trainable, from the top down; the
    embeddings are the last unit to thaw.

    Resume stays exact because the optimizer never changes shape: every parameter this object
    manages is put into the optimizer's param groups from the start (see
    `trainable_param_groups(..., unfreezer=...)`). A parameter that is still frozen has no
    gradient, so the optimizer skips it entirely — no update, no weight decay, no state.
    Unfreezing only flips `requires_grad`. So the optimizer state_dict has the same groups at
    every step (checkpoint load and guard rollbacks just work), and `apply(step)` is a pure
    function of the step: call it with the counter the lr schedule uses (`updates`) before
    each step and after loading a checkpoint or rolling back. (Adding param groups on the fly
    would make a step-100 state_dict unloadable into a freshly built optimizer.)

    Parameters frozen before this object was built (freeze_blocks / patterns / LoRA) stay
    frozen for good.
    """

    def __init__(self, model: nn.Module, every: int, start: int = 1):
        if every < 1:
            raise ConfigError(f"finetune.unfreeze_every must be >= 1 step, got {every}; e.g. 100")
        blocks = find_blocks(model)
        if not 0 <= start <= len(blocks):
            raise ConfigError(
                f"the number of blocks trainable at the start must be between 0 and "
                f"{len(blocks)}, got {start}"
            )
        self.every, self.start = every, start
        units = [list(b.parameters()) for b in reversed(blocks)]  # top block first
        units.append([p for m in embedding_modules(model) for p in m.parameters()])
        # Only what is trainable now is ours to schedule; the rest is frozen for good.
        self.units = [[p for p in unit if p.requires_grad] for unit in units]
        self.current = -1
        self.apply(0)

    def params(self) -> list[nn.Parameter]:
        """Every parameter the schedule may unfreeze (each once)."""
        seen: dict[int, nn.Parameter] = {}
        for unit in self.units:
            for p in unit:
                seen.setdefault(id(p), p)
        return list(seen.values())

    def n_unfrozen(self, step: int) -> int:
        """How many units (blocks, then embeddings) are trainable at `step`."""
        return min(len(self.units), self.start + max(step, 0) // self.every)

    def apply(self, step: int) -> bool:
        """Set requires_grad for `step`; True if anything changed. Idempotent, and going back
        (a rollback) re-freezes."""
        k = self.n_unfrozen(step)
        if k == self.current:
            return False
        # A parameter shared between units counts as unfrozen if any of them is.
        thawed = {id(p) for unit in self.units[:k] for p in unit}
        for p in self.params():
            p.requires_grad_(id(p) in thawed)
        self.current = k
        return True


def layer_depths(model: nn.Module) -> dict[int, int]:
    """id(param) → depth below the top: block i of n is n-1-i, embeddings n, the rest 0."""
    blocks = find_blocks(model)
    n = len(blocks)
    depth: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            depth.setdefault(id(p), n - 1 - i)
    for m in embedding_modules(model):
        for p in m.parameters():
            depth[id(p)] = n  # a head tied to wte shares its (lowest) lr
    return depth


def lr_scales(model: nn.Module, decay: float) -> dict[int, float]:
    """id(param) → discriminative lr multiplier decay ** depth (1.0 at the top)."""
    if not 0 < decay <= 1 or math.isnan(decay):
        raise ConfigError(
            f"finetune.discriminative_lr_decay must be in (0, 1], got {decay}; 0.8-0.95 is "
            "usual, 1.0 turns it off"
        )
    return {pid: decay**d for pid, d in layer_depths(model).items()}
