"""The experiment config: a typed, validated, frozen schema loaded from YAML.

One YAML file plus dotted `key=value` overrides (values parsed as YAML, so `optim.lr=3e-4` is a
float and `guard.inject='[{step: 30, kind: nan_loss}]'` a list) give an `ExperimentConfig`.
Every problem in a config is reported at once, each on one line with the key, the value
received and how to fix it. Configs never execute code: YAML is read with `safe_load`.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from genlab import safe_yaml
from genlab.data.sources import BUILTIN_TEXT_CORPORA
from genlab.errors import ConfigError
from genlab.tuning.schema import TuneConfig


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are immutable, and no
    number is NaN or infinite (every float in a config must be finite to mean anything)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


IMAGE_FAMILIES = ("vae", "gan")
BUILTIN_IMAGE_SOURCES = ("digits",)
# Choices the image models dispatch on (genlab.models imports them from here).
ImageArch = Literal["auto", "mlp", "conv"]
VAERecon = Literal["bce", "mse", "gaussian"]
GANLoss = Literal["nonsaturating", "hinge", "wgan-gp"]


class AugmentSection(Section):
    """Train-split-only image augmentation; each op applies with its probability."""

    hflip_p: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    rotate_p: float = Field(0.0, ge=0, le=1, description="probability of a rotation")
    rotate_degrees: float = Field(
        10.0, ge=0, le=180, description="rotations are uniform in [-rotate_degrees, rotate_degrees]"
    )
    shift_p: float = Field(
        0.0, ge=0, le=1, description="probability of a shift (whole pixels, pad and crop)"
    )
    shift_fraction: float = Field(
        0.125, ge=0, lt=0.5, description="shifts go up to this share of the image size"
    )
    brightness_p: float = Field(0.0, ge=0, le=1, description="probability of a brightness change")
    brightness: float = Field(
        0.2,
        ge=0,
        le=1,
        description="brightness deltas are uniform in +- this share of the value range",
    )


class CleanSection(Section):
    """Text transforms and quality filters (genlab.data.clean); a filter set to null (or 0 for
    the minimums) is off. Whitespace normalisation keeps leading indentation (code matters)."""

    unicode_form: Literal["NFC", "NFKC"] | None = Field(
        "NFC", description="NFKC also folds compatibility forms (full-width letters, ligatures)"
    )
    normalize_whitespace: bool = Field(
        True, description="unify line ends, odd spaces, trailing spaces and blank-line runs"
    )
    remove_control_chars: bool = Field(True, description="C0/C1 except newline, tab, CR")
    min_chars: int = Field(1, ge=0, description="drop documents shorter than this many characters")
    max_chars: int | None = Field(
        None, gt=0, description="drop documents longer than this many characters; null = no limit"
    )
    min_words: int = Field(0, ge=0, description="drop documents with fewer words")
    max_words: int | None = Field(
        None, gt=0, description="drop documents with more words; null = no limit"
    )
    max_dup_line_fraction: float | None = Field(
        None, ge=0, le=1, description="drop when this share of lines repeats an earlier line"
    )
    dup_ngram_size: int = Field(5, ge=1, description="n of the word n-gram repetition filter")
    max_dup_ngram_fraction: float | None = Field(
        None, ge=0, le=1, description="drop when this share of word n-grams repeats"
    )
    min_alpha_fraction: float | None = Field(
        None, ge=0, le=1, description="drop when letters are a smaller share of visible chars"
    )
    drop_patterns: list[str] = Field(default_factory=list, description="regexes that drop")

    @model_validator(mode="after")
    def _bounds_and_patterns(self) -> CleanSection:
        for low, high in (("min_chars", "max_chars"), ("min_words", "max_words")):
            lo, hi = getattr(self, low), getattr(self, high)
            if hi is not None and hi < lo:
                raise ValueError(f"{low}={lo} is above {high}={hi}; raise {high} or set it to null")
        for pattern in self.drop_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"drop_patterns has an invalid regular expression {pattern[:60]!r} ({exc}); "
                    "fix or remove it"
                ) from None
        return self


class DedupSection(Section):
    """Exact and MinHash near-duplicate removal (genlab.data.dedup), run before the split so a
    document and its near-copy never straddle splits."""

    exact: bool = Field(True, description="same text after NFKC, case folding, whitespace")
    near: bool = Field(True, description="estimated Jaccard similarity >= threshold")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity that is a dup")
    shingle: Literal["word", "char"] = Field(
        "word", description="word n-grams; char n-grams for short texts or no spaces"
    )
    shingle_size: int = Field(3, ge=1, description="n of the n-gram shingles MinHash compares")
    num_perm: int = Field(128, ge=16, description="MinHash permutations: accuracy vs speed")


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class SplitSection(Section):
    """Shares of documents per split (genlab.data.split); training gets the rest."""

    val: float = Field(
        0.1, gt=0, lt=1, description="share of documents (or images) held out for validation"
    )
    test: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share held out for testing (`genlab eval --split test`); 0 = none",
    )
    stratify: bool | None = Field(None, description="null: when every document has a label")

    @model_validator(mode="before")
    @classmethod
    def _train_is_the_rest(cls, raw: Any) -> Any:
        """`train` may be written (configs of older runs hold it): it must be what val and
        test leave, and is not stored, since it sets nothing of its own."""
        if not isinstance(raw, dict) or "train" not in raw:
            return raw
        raw = dict(raw)
        train = raw.pop("train")
        if train is None:
            return raw
        if not _finite_number(train):
            raise ValueError(
                f"train must be a number (the share left for training), got "
                f"{repr(train)[:40]}; or leave it out"
            )
        val = raw.get("val", cls.model_fields["val"].default)
        test = raw.get("test", cls.model_fields["test"].default)
        if not (_finite_number(val) and _finite_number(test)):
            return raw  # the field checks report val / test
        if abs(train + val + test - 1.0) > 1e-6:
            raise ValueError(
                f"fractions must sum to 1, got train={train} + val={val} + test={test} = "
                f"{train + val + test:.6g}; set train to {1 - val - test:.6g} or leave it out "
                "(it is the rest)"
            )
        return raw

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitSection:
        if self.val + self.test >= 1.0:
            raise ValueError(
                f"val={self.val} + test={self.test} leave nothing to train on; keep their sum "
                "below 1, e.g. val=0.1 test=0.1"
            )
        return self

    @property
    def train(self) -> float:
        """Share of documents for training: what val and test leave."""
        return round(1.0 - self.val - self.test, 10)


class DataConfig(Section):
    """Where the data comes from and how it is prepared (genlab.data.prepare)."""

    source: str = Field(
        "python-docs",
        description="built-in (python-docs, digits), a file (.txt/.jsonl/.csv/.tsv), a "
        "directory, a glob, or a saved Hugging Face dataset directory",
    )
    text_field: str = Field("text", description="JSONL/CSV/HF field holding the text")
    id_field: str | None = Field(None, description="document id field (else file and line)")
    label_field: str | None = Field(None, description="field used as label (stratified split)")
    on_invalid_utf8: Literal["replace", "skip"] = Field(
        "replace", description="replace: keep the record with U+FFFD for bad bytes; skip: drop it"
    )
    clean: CleanSection = Field(default_factory=CleanSection)
    dedup: DedupSection = Field(default_factory=DedupSection)
    split: SplitSection = Field(default_factory=SplitSection)
    tokenizer: Literal["byte", "char", "bpe", "hf"] = Field(
        "char",
        description="byte, char, bpe (trained on train; data.vocab_size) or hf (tokenizer_path)",
    )
    vocab_size: int = Field(4096, gt=0, le=2**20, description="bpe: target vocabulary size")
    tokenizer_path: str | None = Field(None, description="hf: local tokenizer dir or file")
    tokenizer_train_mb: float | None = Field(
        64, gt=0, description="bpe: learn from about this many MB of train documents, spread "
        "evenly over the split; null: all of it"
    )  # fmt: skip
    block_size: int = Field(128, gt=0, description="tokens per training window")
    # Preparation runs (genlab.data.engine); they do not change what is prepared.
    workers: int | None = Field(None, ge=1, le=1024, description="processes; null: all cores")
    shard_mb: float = Field(
        16.0, gt=0, le=4096, description="MB of source per shard, the unit of parallel work"
    )
    engine: Literal["local", "dask"] = Field("local", description="dask: a Dask cluster")
    engine_address: str | None = Field(
        None, description="dask scheduler, e.g. tcp://host:8786; null: a local cluster"
    )
    # Images (model.family vae / gan)
    image_size: int = Field(32, ge=4, description="image folders are resized to this")
    channels: Literal[1, 3] = Field(3, description="image folders: 1 grey, 3 RGB")
    on_bad_file: Literal["skip", "error"] = Field(
        "skip", description="an unreadable image file: skip it (counted) or stop with an error"
    )
    scale: Literal["minmax", "standard"] = Field(
        "minmax",
        description="pixel scaling fitted on train: minmax (to scale_range) or standard (z)",
    )
    scale_range: tuple[float, float] | None = Field(
        None, description="minmax target; default [-1, 1] for gan, [0, 1] for vae"
    )
    augment: AugmentSection = Field(default_factory=AugmentSection)
    # Cross-validation (the tuner sets these): the train documents are cut into `cv_folds`
    # folds; fold `cv_fold` becomes the validation split and the held-out val is not used.
    cv_folds: int = Field(0, ge=0, description="0: no cross-validation; else K >= 2")
    cv_fold: int | None = Field(
        None, ge=0, description="the fold used as validation (the tuner sets it); null = none"
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_fractions(cls, raw: Any) -> Any:
        """Configs written before `data.split` set data.val_fraction / data.test_fraction;
        they still load (resume, eval of old runs) and become data.split."""
        if not isinstance(raw, dict) or not {"val_fraction", "test_fraction"} & set(raw):
            return raw
        if not isinstance(raw.get("split") or {}, dict):
            return raw  # data.split is not a mapping: the schema reports it
        raw = dict(raw)
        split = dict(raw.get("split") or {})
        for old, new in (("val_fraction", "val"), ("test_fraction", "test")):
            if old in raw:
                value = raw.pop(old)
                if new in split and split[new] != value:
                    raise ValueError(
                        f"data.{old}={value} and data.split.{new}={split[new]} disagree; "
                        f"set only data.split.{new}"
                    )
                split[new] = value
        split.pop("train", None)  # recomputed as the rest
        raw["split"] = split
        return raw

    def scale_range_for(self, family: str) -> tuple[float, float]:
        """data.scale_range, or the family's default: [-1, 1] for gan (tanh), else [0, 1]."""
        if self.scale_range is not None:
            return self.scale_range
        return (-1.0, 1.0) if family == "gan" else (0.0, 1.0)

    @property
    def val_fraction(self) -> float:
        """Share of documents (or images) held out for validation: data.split.val."""
        return self.split.val

    @property
    def test_fraction(self) -> float:
        """Share held out for testing: data.split.test."""
        return self.split.test

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.tokenizer == "hf" and not self.tokenizer_path:
            raise ValueError(
                "data.tokenizer 'hf' needs data.tokenizer_path (a local directory holding "
                "tokenizer.json); set it, or use data.tokenizer=bpe"
            )
        if self.tokenizer == "bpe" and self.vocab_size < 258:
            raise ValueError(
                f"data.vocab_size must be >= 258 for bpe (256 bytes + end-of-text + one "
                f"merge), got {self.vocab_size}; 4096 is usual"
            )
        if self.cv_folds == 1:
            raise ValueError("data.cv_folds must be 0 (off) or >= 2, got 1; use e.g. 5")
        if self.cv_fold is not None and self.cv_fold >= max(self.cv_folds, 1):
            raise ValueError(
                f"data.cv_fold must be < data.cv_folds, got cv_fold={self.cv_fold}, "
                f"cv_folds={self.cv_folds}; use a fold index in [0, {max(self.cv_folds, 1) - 1}]"
            )
        return self


class VAESection(Section):
    """Variational autoencoder (model.family vae)."""

    latent_dim: int = Field(16, gt=0, description="size of the latent code z")
    recon: VAERecon = Field(
        "bce", description="reconstruction likelihood: bce (pixels in [0, 1]), mse or gaussian"
    )
    beta: float = Field(1.0, ge=0, description="weight of the KL term (beta-VAE; 1 = the ELBO)")
    kl_anneal: Literal["none", "linear", "cyclical"] = Field(
        "none",
        description="KL weight schedule: none, linear (0 -> 1 over anneal_steps) or cyclical",
    )
    anneal_steps: int = Field(
        1000, gt=0, description="length of the KL warm-up (linear) or of one cycle (cyclical)"
    )
    anneal_ratio: float = Field(
        0.5, gt=0, le=1, description="cyclical: share of each cycle spent ramping the KL weight up"
    )
    free_bits: float = Field(0.0, ge=0, description="nats per latent dimension")
    arch: ImageArch = Field(
        "auto", description="mlp, conv, or auto (mlp for images of 8 px or less, else conv)"
    )
    hidden: int = Field(256, gt=0, description="mlp: width of the hidden layers")
    base_channels: int = Field(
        32, gt=0, description="conv: channels of the first conv layer (doubled at each halving)"
    )


class GANSection(Section):
    """Generative adversarial network (model.family gan); D and G have their own optimizers."""

    z_dim: int = Field(64, gt=0, description="size of the generator's noise input")
    loss: GANLoss = Field("nonsaturating", description="nonsaturating, hinge or wgan-gp")
    gp_weight: float = Field(10.0, ge=0, description="wgan-gp: gradient penalty weight")
    r1_weight: float = Field(0.0, ge=0, description="R1 penalty on real images (any loss); 0 = off")
    spectral_norm: bool = Field(
        False, description="spectral normalization of the discriminator's layers"
    )
    d_steps_per_g: int = Field(1, gt=0, description="discriminator steps per generator step")
    lr_g: float | None = Field(None, gt=0, description="default: optim.lr")
    lr_d: float | None = Field(None, gt=0, description="default: optim.lr (TTUR: set higher)")
    beta1: float = Field(
        0.5, ge=0, lt=1, description="Adam beta1 of both networks (0.5 as in DCGAN)"
    )
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2 of both networks")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="generator EMA for samples; 0 off")
    arch: ImageArch = Field(
        "auto", description="mlp, conv, or auto (mlp for images of 8 px or less, else conv)"
    )
    hidden: int = Field(256, gt=0, description="mlp: width of the hidden layers")
    base_channels: int = Field(
        32, gt=0, description="conv: channels of the widest generator / first discriminator layer"
    )


class ModelConfig(Section):
    """The model: the family and, for GPT, its shape and stabilizers."""

    family: Literal["gpt", "hf", "vae", "gan"] = Field(
        "gpt", description="hf: a local Hugging Face causal LM (finetune.init_from)"
    )
    n_layer: int = Field(4, gt=0, description="transformer blocks")
    n_head: int = Field(4, gt=0, description="attention heads (must divide n_embd)")
    n_embd: int = Field(128, gt=0, description="width of the residual stream")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout probability in attention, MLP and embeddings"
    )
    bias: bool = Field(True, description="biases in the linear layers and LayerNorms")
    # Stabilizers
    init: Literal["normal", "xavier", "kaiming"] = Field(
        "normal", description="weight init: normal (init_std), xavier or kaiming"
    )
    init_std: float = Field(0.02, gt=0, le=1, description="std of the normal init")
    scaled_residual: bool = Field(True, description="scale residual projections 1/sqrt(2L)")
    qk_norm: bool = Field(False, description="LayerNorm on queries and keys")
    z_loss: float = Field(0.0, ge=0, description="coefficient of mean(logsumexp(logits)^2)")
    vae: VAESection = Field(default_factory=VAESection)
    gan: GANSection = Field(default_factory=GANSection)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            fit = self.n_head * max(1, round(self.n_embd / self.n_head))
            raise ValueError(
                f"model.n_embd must be divisible by model.n_head, got n_embd={self.n_embd}, "
                f"n_head={self.n_head}; pick e.g. n_embd={fit}"
            )
        return self


class OptimConfig(Section):
    """The optimizer (both GAN networks use it, with model.gan's betas)."""

    name: Literal["adamw", "adam", "sgd"] = Field(
        "adamw", description="optimizer: adamw (decoupled weight decay), adam or sgd"
    )
    lr: float = Field(1e-3, gt=0, le=10, description="peak learning rate")
    weight_decay: float = Field(
        0.1, ge=0, le=10, description="decoupled weight decay, on weight matrices only"
    )
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.95, ge=0, lt=1, description="Adam beta2")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    # Explicit penalties added to the loss, over weight matrices (weight_decay is the
    # decoupled form of L2 and applies separately).
    l1: float = Field(
        0.0, ge=0, description="explicit L1 penalty on weight matrices, added to the loss"
    )
    l2: float = Field(
        0.0, ge=0, description="explicit L2 penalty on weight matrices, added to the loss"
    )


class ScheduleConfig(Section):
    """The learning-rate schedule over updates (skipped steps do not count)."""

    warmup_steps: int = Field(
        100, ge=0, description="linear warmup from 0 to optim.lr over this many updates"
    )
    decay: Literal["cosine", "linear", "constant"] = Field(
        "cosine",
        description="after warmup: cosine or linear decay to lr * min_lr_ratio, or constant",
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr = lr * min_lr_ratio")


class EarlyStoppingConfig(Section):
    """Stop when `metric` has not improved by `min_delta` for `patience` evaluations; the best
    weights are restored at the end."""

    metric: str = Field("val/loss", description="the evaluation metric watched, e.g. val/loss")
    mode: Literal["min", "max"] = Field(
        "min", description="min: lower is better; max: higher is better"
    )
    patience: int = Field(5, gt=0, description="evaluations without improvement")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")


class TrainConfig(Section):
    """The training loop: length, batches, cadence, precision, processes."""

    max_steps: int = Field(
        1000, gt=0, description="iterations to train (a GAN iteration is its D and G steps)"
    )
    batch_size: int = Field(
        32, gt=0, description="samples per step, over all processes (the global batch)"
    )
    grad_accum: int = Field(
        1, gt=0, description="language models: split each step's batch into this many micro-batches"
    )
    eval_every: int = Field(100, gt=0, description="evaluate every N steps (and at the last)")
    eval_batches: int = Field(
        20,
        gt=0,
        description="batches per training-time evaluation (an estimate; genlab eval is full)",
    )
    checkpoint_every: int = Field(
        200, gt=0, description="save a checkpoint every N steps (and at the last)"
    )
    keep_checkpoints: int = Field(3, gt=0, description="how many recent checkpoints to keep")
    sample_every: int = Field(
        200, gt=0, description="write samples every N steps (and at the last)"
    )
    sample_tokens: int = Field(200, gt=0, description="language models: tokens per written sample")
    grad_clip: float = Field(1.0, ge=0, description="max grad norm (or |grad|); 0 = off")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 autocast where the CPU (AMX, AVX-512 BF16) or GPU has native "
        "bf16 and a short calibration of this model, cached per machine, finds it >= 5% "
        "faster, else fp32 (the choice is printed, in metrics.json and the run's config.yaml); "
        "fp16 (GPU only) uses a GradScaler; its skipped steps are logged",
    )
    compile: bool = Field(False, description="run the model through torch.compile")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: a CUDA GPU when there is one, else the CPU"
    )
    progress: bool = Field(True, description="progress bar on a terminal")
    threads: int = Field(
        0, ge=0, le=1024, description="CPU threads for torch; 0 = at most the CPUs this process has"
    )
    grad_clip_mode: Literal["norm", "value"] = Field(
        "norm", description="norm: clip the total gradient norm; value: clip each gradient entry"
    )
    ema_decay: float = Field(0.0, ge=0, lt=1, description="EMA of weights for eval; 0 = off")
    early_stopping: EarlyStoppingConfig | None = Field(
        None,
        description="stop when a metric stops improving (null = off); the best weights are kept",
    )
    strategy: Literal["none", "ddp", "fsdp", "pipeline"] = Field(
        "none", description="multi-process training under torchrun; batch_size is global"
    )
    activation_checkpointing: bool = Field(
        False, description="recompute each GPT block's activations in backward (less memory)"
    )
    async_checkpoint: bool = Field(
        True,
        description="write checkpoints in the background: a save costs the loop only the "
        "copy of the state to host memory",
    )
    checkpoint_format: Literal["consolidated", "sharded"] = Field(
        "consolidated",
        description="sharded: torch.distributed.checkpoint, one file per rank (fsdp); "
        "either format resumes at any world size",
    )
    pipeline_schedule: Literal["gpipe", "1f1b"] = Field(
        "gpipe", description="train.strategy=pipeline: the micro-batch schedule"
    )
    pipeline_microbatches: int = Field(
        4, gt=0, description="train.strategy=pipeline: micro-batches per rank batch"
    )


class CollapseSection(Section):
    """Image-family detectors, checked at each evaluation (after `check_after` steps).

    Measured on digits (MLP GAN, batch 64): a fresh generator's samples are nearly identical
    (spread ratio ~0.13) and healthy runs stay below 0.2 for 250-750 steps before they spread
    out (0.75-0.95 from step 1000 on); collapsed runs sit at 0.13-0.18. Hence checks from step
    1000 and a threshold of 0.3, with margin on both sides."""

    check_after: int = Field(
        1000, ge=0, description="steps before collapse checks start (a new GAN looks collapsed)"
    )
    mode_ratio: float = Field(0.3, gt=0, lt=1, description="fake/real spread ratio that fires")
    mode_patience: int = Field(2, gt=0, description="consecutive low evaluations")
    d_accuracy: float = Field(0.99, gt=0.5, le=1, description="D accuracy that overpowers")
    d_window: int = Field(200, gt=0, description="steps D must stay that accurate")
    posterior_active: float = Field(0.01, gt=0, description="variance of an active unit")
    posterior_kl_floor: float = Field(0.01, gt=0, description="nats per dim")
    posterior_fraction: float = Field(0.9, gt=0, le=1, description="share of dead dims")


class InjectedFault(Section):
    """A fault the guard's drills inject on purpose at an (iteration) step. `crash` kills
    process `rank` abruptly at the start of `step`, once per run directory (an elastic
    launch, `--max-restarts`, brings the group back and the run resumes by itself)."""

    step: int = Field(gt=0, description="the iteration the fault hits")
    kind: Literal["nan_loss", "inf_grad", "loss_spike", "crash"] = Field(
        description="a NaN loss, an infinite gradient, the loss times `scale`, or process "
        "`rank` killed"
    )
    scale: float = Field(100.0, gt=0, description="loss multiplier for loss_spike")
    target: str | None = Field(None, description="updater (gan: generator|discriminator)")
    rank: int = Field(0, ge=0, description="crash: the process (global rank) that dies")

    @model_validator(mode="after")
    def _rank_is_for_crashes(self) -> InjectedFault:
        if self.rank and self.kind != "crash":
            raise ValueError(
                f"guard.inject rank={self.rank} only applies to kind crash, got kind "
                f"{self.kind!r}; remove rank"
            )
        return self


GuardAction = Literal["skip", "lr_cooldown", "rollback"]


class GuardConfig(Section):
    """The stability guard: detectors, and the escalating ladder of responses."""

    enabled: bool = Field(
        True, description="the stability guard (off: steps are applied whatever they hold)"
    )
    # Detection: robust z-score (median / MAD) against the last `window` healthy values.
    window: int = Field(
        50, ge=5, description="recent healthy values the robust z-scores compare against"
    )
    min_history: int = Field(20, ge=3, description="values needed before spike detection")
    loss_z: float = Field(6.0, gt=0, description="loss spike threshold (robust z)")
    grad_z: float = Field(12.0, gt=0, description="grad-norm explosion threshold (robust z)")
    grad_ratio: float = Field(
        3.0, ge=1, description="an explosion is also at least this × the window's median grad norm"
    )
    min_scale: float = Field(
        0.05, ge=0, description="floor of the z-score scale, as a share of the median"
    )
    diverge_factor: float | None = Field(
        2.0, gt=1, description="loss above this × the first loss is divergence; null = off"
    )
    # Response: the n-th event of an episode takes rung n of the ladder (the last rung
    # repeats). An episode ends after `escalate_within` steps without an event.
    ladder: list[GuardAction] = Field(
        default_factory=lambda: ["skip", "lr_cooldown", "rollback"],
        min_length=1,
        description="responses to successive events of an episode: skip, lr_cooldown, rollback",
    )
    escalate_within: int = Field(
        10, gt=0, description="an event this close to the previous one climbs a rung"
    )
    cooldown_factor: float = Field(
        0.1, gt=0, le=1, description="lr_cooldown multiplies the lr by this"
    )
    cooldown_steps: int = Field(50, ge=0, description="steps at the reduced lr")
    ramp_steps: int = Field(50, ge=0, description="steps to ramp back to the scheduled lr")
    skip_window: int = Field(2, ge=1, description="batches before a failure a rollback skips")
    healthy_after: int = Field(20, ge=0, description="clean steps that make a checkpoint healthy")
    memory_snapshot: bool = Field(True, description="keep the healthy state in RAM")
    abort_after: int = Field(8, gt=0, description="events within abort_window that abort")
    abort_window: int = Field(
        200, gt=0, description="steps over which abort_after events abort the run"
    )
    max_rollbacks: int = Field(5, ge=0, description="abort after more rollbacks than this")
    rollback_lr_factor: float = Field(
        0.5, gt=0, le=1, description="each rollback multiplies the lr by this, for good"
    )
    inject: list[InjectedFault] = Field(
        default_factory=list,
        description="faults to inject on purpose (drills): [{step, kind, scale, target}]",
    )
    collapse: CollapseSection = Field(default_factory=lambda: CollapseSection())


class LoraSection(Section):
    """LoRA adapters (finetune.method lora)."""

    rank: int = Field(8, gt=0, description="rank r of the low-rank update")
    alpha: float = Field(
        16.0, gt=0, description="scaling: the update is multiplied by alpha / rank"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] | None = Field(None, description="default: attention + MLP")


class FinetuneConfig(Section):
    """Start from a pretrained model and adapt it (one switch: `method`)."""

    init_from: str | None = Field(
        None, description="a genlab run / checkpoints/step-N dir, or a local HF model dir"
    )
    method: Literal["full", "freeze", "lora"] = Field(
        "full",
        description="full: train everything; freeze: freeze bottom blocks; lora: adapters only",
    )
    freeze_blocks: int = Field(0, ge=0, description="method freeze: bottom blocks to freeze")
    freeze_embeddings: bool = Field(True, description="method freeze: freeze the embeddings too")
    freeze_patterns: list[str] = Field(default_factory=list, description="fnmatch names")
    reinit_head: bool = Field(
        False, description="start the output head afresh (unties it from the embeddings)"
    )
    lora: LoraSection = Field(default_factory=LoraSection)
    discriminative_lr_decay: float = Field(1.0, gt=0, le=1, description="lr × decay^depth")
    unfreeze_every: int = Field(0, ge=0, description="thaw one more block every N steps")
    unfreeze_start: int = Field(
        1, ge=0, description="unfreeze_every: top blocks trainable from the start"
    )
    resize_embeddings: bool = Field(
        False, description="resize the embeddings when the data's vocabulary differs"
    )
    merge_lora: bool = Field(False, description="fold the adapter into the final checkpoint")

    @model_validator(mode="after")
    def _method_fits(self) -> FinetuneConfig:
        if self.method != "full" and self.init_from is None:
            raise ValueError(
                f"finetune.method {self.method!r} needs finetune.init_from (a pretrained run "
                "or Hugging Face directory); set it, or use finetune.method=full"
            )
        if self.freeze_blocks and self.method != "freeze":
            raise ValueError(
                f"finetune.freeze_blocks={self.freeze_blocks} needs finetune.method=freeze, "
                f"got {self.method!r}"
            )
        if self.method == "lora" and (self.unfreeze_every or self.freeze_patterns):
            raise ValueError(
                "finetune.unfreeze_every / freeze_patterns do not combine with method lora "
                "(LoRA already freezes the whole base model); remove them or use method freeze"
            )
        # A setting that would be silently ignored is an error: every key changes something.
        changed = [
            name
            for name, field in FinetuneConfig.model_fields.items()
            if getattr(self, name) != field.get_default(call_default_factory=True)
        ]
        if self.init_from is None and changed:
            raise ValueError(
                f"finetune.{changed[0]} has no effect without finetune.init_from; set init_from "
                "(a pretrained run or Hugging Face directory) or remove it"
            )
        if self.method != "lora" and ({"lora", "merge_lora"} & set(changed)):
            raise ValueError(
                f"finetune.lora and finetune.merge_lora apply to method lora only, got method "
                f"{self.method!r}; set finetune.method=lora or remove them"
            )
        return self


class MlflowSection(Section):
    """Where a run's MLflow copy goes. Nothing here reaches the network unless
    `tracking_uri` names a server."""

    tracking_uri: str | None = Field(
        None, description="default: sqlite:///<run dir's parent>/mlflow.db (a local file)"
    )
    experiment: str | None = Field(None, description="default: the config's name")


class TrackConfig(Section):
    """Copies of a run's records for tracking tools (metrics.jsonl is always written), and
    the self-contained report.html written at the end of train/resume/eval/tune."""

    tensorboard: bool = Field(False, description="event files under RUN_DIR/tb/")
    mlflow: MlflowSection | None = Field(None, description="{} for the local default store")
    report: bool = Field(True, description="write report.html at the end of each command")

    @field_validator("mlflow", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        """`track.mlflow=true` means the defaults, `false` off."""
        return {} if value is True else None if value is False else value


class PruneSection(Section):
    """Pruning (genlab.compression.prune): which weights become zero or disappear."""

    method: Literal["none", "magnitude", "wanda", "structured"] = Field(
        "none",
        description="magnitude: smallest |w|; wanda: smallest |w| x input-activation norm "
        "(calibration windows of the train split); structured: whole attention heads, MLP "
        "neurons and conv channels (tensors shrink)",
    )
    sparsity: float = Field(0.5, ge=0, lt=1, description="share of weights (or units) removed")
    scope: Literal["layer", "global"] = Field(
        "layer", description="magnitude: one threshold per layer, or one over all layers"
    )
    schedule: Literal["oneshot", "gradual"] = Field(
        "oneshot", description="gradual: sparsity ramps up during the recovery steps"
    )
    exclude: list[str] = Field(
        default_factory=list, description="module names (fnmatch) left unpruned"
    )
    calibration_batches: int = Field(
        4, gt=0, description="wanda/structured: train batches whose activations are measured"
    )


class CompressSection(Section):
    """`genlab compress`: quantization and pruning, measured before and after
    (genlab.compression). Read from the run's config; overridable with compress.* keys."""

    name: str | None = Field(None, description="output name; default from the settings")
    quantize: Literal[
        "none", "int8_dynamic", "int8_weight_only", "int4_weight_only", "fp16", "bf16"
    ] = Field(
        "none",
        description="int8_dynamic: int8 weights and activations (PyTorch's CPU kernel); "
        "int8/int4_weight_only: torchao weights; fp16/bf16: half-precision layers",
    )
    keep_fp32: list[str] = Field(
        default_factory=lambda: ["lm_head"],
        description="module names (fnmatch, also matched against name suffixes) not quantized",
    )
    prune: PruneSection = Field(default_factory=PruneSection)
    recover_steps: int = Field(
        0, ge=0, description="fine-tuning steps after pruning (--sweep: its recovery length)"
    )
    recover_lr: float | None = Field(None, gt=0, description="default: optim.lr / 10")
    max_quality_loss: float | None = Field(
        None, gt=0, description="relative loss of the main metric allowed; null: no gate"
    )
    eval_windows: int | None = Field(
        None, gt=0, description="LM quality on this many held-out windows; null: the whole split"
    )
    eval_samples: int = Field(1000, ge=2, description="VAE/GAN: generated images for FID/KID")
    measure_speed: bool = Field(
        True, description="speed and memory columns (a fresh process per model); quality always"
    )
    recover_from: str | None = Field(
        None,
        description="set by genlab compress in its recovery run: the checkpoint the pruned "
        "model is rebuilt from (masks kept fixed while it trains)",
    )

    @model_validator(mode="after")
    def _settings_fit(self) -> CompressSection:
        p = self.prune
        if p.schedule == "gradual" and self.recover_steps == 0:
            raise ValueError(
                "compress.prune.schedule 'gradual' raises the sparsity during recovery, but "
                "compress.recover_steps is 0; set compress.recover_steps (e.g. 200) or use "
                "compress.prune.schedule=oneshot"
            )
        if p.schedule == "gradual" and p.method == "structured":
            raise ValueError(
                "compress.prune.schedule 'gradual' works for magnitude and wanda; structured "
                "pruning changes tensor shapes, so it is oneshot (set schedule=oneshot)"
            )
        return self


class ClassifySection(Section):
    """`task: classify` (genlab.training.classify_task): the head that replaces the backbone's
    output layer, how a text's hidden states become one vector, and the loss's class weights.
    The backbone is model.family's (gpt / hf: the language model without its LM head; vae /
    gan: the VAE encoder or GAN discriminator without its last layer), fresh or from
    finetune.init_from."""

    pooling: Literal["last", "mean"] = Field(
        "mean", description="text: the last token's hidden state, or the mean over the tokens"
    )
    head: Literal["linear", "mlp"] = Field("linear", description="freshly initialised")
    head_hidden: int = Field(128, gt=0, description="head mlp: width of its hidden layer")
    head_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the pooled features")
    class_weights: Literal["balanced", "none"] = Field(
        "none", description="balanced: loss weight n / (K * n_class), counted on the train split"
    )
    label_fraction: float = Field(
        1.0, gt=0, le=1, description="share of each class's train examples used (seeded)"
    )

    @model_validator(mode="after")
    def _hidden_needs_mlp(self) -> ClassifySection:
        # Compared with the default, not "was it written": a run's config.yaml spells out
        # every key, and must load again.
        default = ClassifySection.model_fields["head_hidden"].default
        if self.head_hidden != default and self.head != "mlp":
            raise ValueError(
                f"classify.head_hidden sizes the mlp head, got head {self.head!r}; set "
                "classify.head=mlp or remove head_hidden"
            )
        return self


class ExperimentConfig(Section):
    """One experiment: every section, with its defaults."""

    name: str = Field("run", description="the run's name: runs/<name>, studies/<name>")
    seed: int = Field(1337, ge=0, lt=2**32, description="seeds Python, NumPy and torch")
    task: Literal["generate", "classify"] = Field(
        "generate", description="generate: model the data; classify: predict data labels"
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    compress: CompressSection = Field(default_factory=CompressSection)
    classify: ClassifySection = Field(default_factory=ClassifySection)

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, name: str) -> str:
        if not name or len(name) > 100 or name in (".", "..") or any(c in name for c in "/\\\0"):
            raise ValueError(
                f"the name becomes a directory (runs/<name>), got {safe_yaml.short(name, 60)}; "
                "use letters, digits, '-', '_' or '.', at most 100 characters"
            )
        return name

    @model_validator(mode="after")
    def _source_fits_family(self) -> ExperimentConfig:
        family, source = self.model.family, self.data.source
        if family == "hf" and self.finetune.init_from is None:
            raise ValueError(
                "model.family 'hf' needs finetune.init_from: the path of a local Hugging Face "
                "causal-LM directory (genlab never downloads models)"
            )
        if family in ("gpt", "hf") and source in BUILTIN_IMAGE_SOURCES:
            raise ValueError(
                f"data.source {source!r} is an image dataset but model.family is 'gpt'; "
                "set model.family=vae or gan, or use a text source such as python-docs"
            )
        if family in IMAGE_FAMILIES and source in BUILTIN_TEXT_CORPORA:
            raise ValueError(
                f"data.source {source!r} is text but model.family is {family!r}; "
                "use data.source=digits or a folder of images"
            )
        batch, accum = self.train.batch_size, self.train.grad_accum
        if batch % accum:
            raise ValueError(
                f"train.batch_size={batch} does not split into train.grad_accum={accum} equal "
                f"micro-batches; use a multiple, e.g. "
                f"train.batch_size={accum * max(1, batch // accum)}"
            )
        if family in IMAGE_FAMILIES and self.train.grad_accum > 1:
            raise ValueError(
                f"train.grad_accum splits language-model batches, not model.family {family!r}; "
                "set train.grad_accum=1 (lower train.batch_size to save memory)"
            )
        if family in IMAGE_FAMILIES and self.train.activation_checkpointing:
            raise ValueError(
                f"train.activation_checkpointing works for the GPT's blocks, not model.family "
                f"{family!r}; set train.activation_checkpointing=false"
            )
        if (
            family == "vae"
            and self.model.vae.recon == "bce"
            and (self.data.scale != "minmax" or self.data.scale_range_for(family) != (0.0, 1.0))
        ):
            raise ValueError(
                "model.vae.recon 'bce' needs pixels in [0, 1], got data.scale="
                f"{self.data.scale}, data.scale_range={self.data.scale_range}; use "
                "data.scale=minmax with the default range, or model.vae.recon=mse"
            )
        return self

    @model_validator(mode="after")
    def _task_fits(self) -> ExperimentConfig:
        from genlab.task_rules import check_task

        problem = check_task(self)
        if problem:
            raise ValueError(problem)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every key with its resolved value, as plain YAML-able data."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Keys that shape a run's modules and tensors (or the tokenizer that gives ids their meaning):
# a resume cannot change them, since the checkpoint holds tensors of the old shapes.
ARCHITECTURE_KEYS = (
    "model.family", "model.n_layer", "model.n_head", "model.n_embd", "model.bias",
    "model.qk_norm", "model.vae.latent_dim", "model.vae.arch", "model.vae.hidden",
    "model.vae.base_channels", "model.vae.recon", "model.gan.z_dim", "model.gan.arch",
    "model.gan.hidden", "model.gan.base_channels", "model.gan.spectral_norm",
    "model.gan.ema_decay", "data.tokenizer", "data.vocab_size", "data.tokenizer_path",
    "data.block_size", "data.image_size", "data.channels", "finetune.init_from",
    "finetune.method", "finetune.lora.rank", "finetune.lora.target_modules",
    "finetune.reinit_head", "finetune.resize_embeddings", "train.ema_decay", "task",
    "classify.head", "classify.head_hidden",
)  # fmt: skip


def architecture_changes(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """`key: old -> new` for each ARCHITECTURE_KEYS entry that differs."""
    changes = []
    for key in ARCHITECTURE_KEYS:
        a, b = _lookup(old.to_dict(), key), _lookup(new.to_dict(), key)
        if a != b:
            changes.append(f"{key}: {safe_yaml.short(a, 30)} -> {safe_yaml.short(b, 30)}")
    return changes


def _lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


# ---------------------------------------------------------------------------------------------
# Loading


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or start from defaults when `path` is None), apply dotted
    `key=value` overrides and validate everything, reporting all problems together."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        raw = read_yaml_mapping(path)
        origin = str(path)
    raw = apply_overrides(raw, overrides or [])
    raw.setdefault("name", Path(path).stem if path is not None else "run")
    return from_dict(raw, origin=origin)


def from_dict(raw: dict[str, Any], origin: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(err, raw) for err in exc.errors()]
        raise ConfigError(_join_problems(origin, problems)) from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        kind = "is a directory" if p.is_dir() else "does not exist"
        raise ConfigError(
            f"config file {str(p)!r} {kind}; pass the path of a YAML file, e.g. examples/lm.yaml"
        )
    origin = f"config file {str(p)!r}"
    try:
        if p.stat().st_size > 4 * safe_yaml.MAX_CHARS:  # refused unread, whatever its encoding
            raise ConfigError(
                f"{origin} is {p.stat().st_size:,} bytes, far over what a config holds; "
                "point at the YAML config, not at data"
            )
        data = safe_yaml.load(p.read_text(encoding="utf-8"), origin)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = str(getattr(exc, "problem", None) or "invalid syntax")[:120]
        raise ConfigError(
            f"{origin} is not valid YAML{where}: {problem}; fix the syntax there"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{origin} is not UTF-8 text; save it as UTF-8 YAML") from None
    except OSError as exc:
        raise ConfigError(
            f"{origin} cannot be read ({exc.strerror}); check its permissions"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin} must hold a mapping of sections (data:, model:, ...), "
            f"got a {type(data).__name__}; write it as `key: value` lines"
        )
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `a.b.c=value` applied; values are parsed as YAML."""
    out = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        shown = safe_yaml.short(item, 60)
        if not sep or not key:
            raise ConfigError(
                f"override {shown} is not of the form key=value; write e.g. optim.lr=3e-4"
            )
        try:
            value = safe_yaml.load(text, f"override {shown}") if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(
                f"override {shown} has a value that is not valid YAML; quote it, "
                f"e.g. {key[:40]}='...'"
            ) from None
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])[:60]
                raise ConfigError(
                    f"override {shown}: {prefix} is a value ({safe_yaml.short(child, 40)}), "
                    f"not a section; set {prefix}=... directly"
                )
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


# ---------------------------------------------------------------------------------------------
# Error messages


_FIX_BY_TYPE = {
    "greater_than": "use a value > {gt}",
    "greater_than_equal": "use a value >= {ge}",
    "less_than": "use a value < {lt}",
    "less_than_equal": "use a value <= {le}",
    "literal_error": "use one of {expected}",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number such as 3e-4",
    "float_type": "use a number such as 3e-4",
    "bool_parsing": "use true or false",
    "bool_type": "use true or false",
    "string_type": "use a string",
    "list_type": "use a YAML list such as [a, b]",
    "model_type": "use a mapping of keys",
    "missing": "add this key",
}


def _describe(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    typ = err["type"]
    if typ == "extra_forbidden":
        return _unknown_key(loc)
    if typ == "value_error":
        # Our own cross-field checks already name keys, values and the fix.
        msg = str(err.get("ctx", {}).get("error", err["msg"]))[:240]
        return msg if not key else f"{key[:80]}: {msg}"
    value = err.get("input")
    fix = _FIX_BY_TYPE.get(typ, "")
    ctx = err.get("ctx") or {}
    if fix:
        fix = fix.format(**{k: v for k, v in ctx.items()}) if ctx else fix.split(" {")[0]
    # A literal's message lists the choices, and so does its fix: say them once.
    msg = "not an allowed value" if typ == "literal_error" else str(err["msg"]).lower()[:120]
    line = f"{key[:80]}: {msg}, got {safe_yaml.short(value)}" + (f"; {fix}" if fix else "")
    if len(line) > 280:  # many choices and a long value: the value gives way
        line = f"{key[:80]}: {msg}, got {safe_yaml.short(value, 30)}" + (f"; {fix}" if fix else "")
    return line[:280]


def _unknown_key(loc: list[str]) -> str:
    *parent, name = loc
    model: type[BaseModel] = ExperimentConfig
    parts = iter(parent)
    for part in parts:
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        values = typing.get_args(ann)[-1:] if typing.get_origin(ann) is dict else ()
        if values and isinstance(values[0], type) and issubclass(values[0], BaseModel):
            model = values[0]  # a mapping of sections (tune.space): the next part is its key
            next(parts, None)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            break
    known = list(model.model_fields)
    where = safe_yaml.short(".".join(parent), 60) if parent else "the top level"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    key = safe_yaml.short(".".join(loc), 60)
    if close:
        return f"unknown key {key}; did you mean {'.'.join([*parent, close[0]])!r}?"
    listing = ", ".join(known)
    if len(listing) > 180:  # a line stays readable: the rest is in `genlab config --show`
        listing = listing[:180].rsplit(", ", 1)[0] + ", ..."
    return f"unknown key {key}; known keys in {where}: {listing}"


def _join_problems(origin: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"invalid config ({origin}): {problems[0]}"
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"invalid config ({origin}): {len(problems)} problems\n{lines}"
