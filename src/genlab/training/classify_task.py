"""`task: classify` for the training loop: a classifier (training/classifier_model.py) on
labelled texts or images, trained with cross-entropy (class-weighted with
classify.class_weights=balanced) through the same loop, guard, checkpoints and early stopping
as every family.

Each evaluation scores the whole validation split: `val/loss` (unweighted cross-entropy, nats
per example), `val/accuracy` and `val/f1_macro` (evaluation/classify.py, scikit-learn), so
early stopping and tune.metric can select on any of them.

The data side is one of two providers with the same surface: `TextBatches` (token rows of
labelled documents) or `LabelledImageBatches` (the image families' `ImageBatches` with their
labels). Sample ids are positions in the train split, so the guard skips bad examples by id.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import ExperimentConfig
from genlab.data.labelled import (
    CLASSES_FILE,
    LabelledText,
    TextRows,
    balanced_weights,
    check_folds,
    class_list,
    encode_texts,
    subsample_per_class,
)
from genlab.data.sampler import IndexSampler
from genlab.data.tokenizers import Tokenizer
from genlab.errors import DataError
from genlab.evaluation.classify import classification_report
from genlab.training.classifier_model import (
    ClassifierModel,
    build_image_classifier_model,
    build_text_classifier_model,
)
from genlab.training.family import Finding, UpdateFn, UpdaterSpec

Inputs = tuple[torch.Tensor, ...]  # what the classifier's forward takes: (ids, lengths) | (x,)
SAMPLE_ROWS = 8  # validation examples listed in samples/step-N.txt


class TextBatches:
    """Train batches of token rows (ids, lengths) with labels, and held-out batches."""

    kind = "text"

    def __init__(self, data: LabelledText, cfg: ExperimentConfig, device: torch.device):
        self.data, self.cfg, self.device = data, cfg, device
        self.classes = data.classes
        self.train = data.splits["train"]
        self.sampler = IndexSampler(len(self.train), cfg.seed)
        self.shard: Callable[[Any], Any] = lambda rows: rows  # this rank's rows (DDP)
        self.recent: deque[list[int]] = deque(maxlen=cfg.guard.skip_window)
        self.sampled = self  # what draws the train batches (the guard's view, see below)

    def train_labels(self) -> torch.Tensor:
        return self.train.labels

    def next_batch(self) -> tuple[Inputs, torch.Tensor, list[int]]:
        ids, _ = self.sampler.next_batch(self.cfg.train.batch_size)
        self.recent.append(ids)
        rows = self.shard(ids)
        x, lengths = self.train.rows(rows)
        y = self.train.labels[rows]
        return (x.to(self.device), lengths.to(self.device)), y.to(self.device), ids

    def held_out(self, split: str) -> tuple[list[Inputs], torch.Tensor]:
        """The split's input batches, in order, and its labels (N,)."""
        rows = self.data.splits[split]
        return text_inputs(rows, self.cfg.train.batch_size, self.device), rows.labels

    def raw(self, split: str) -> list[str]:
        """The split's examples before encoding (what perturbations change): its texts."""
        return [d.text for d in self.data.splits[split].docs]

    def batches_of(self, texts: list[str]) -> list[Inputs]:
        return text_batches(
            self.data.tokenizer, texts, self.cfg.data.block_size, self.cfg.train.batch_size,
            self.device,
        )  # fmt: skip

    def describe(self, i: int, split: str = "val") -> str:
        return self.data.splits[split].docs[i].text[:60]

    def describe_recent(self) -> str:
        if not self.recent:
            return "no batch"
        ids = self.recent[-1]
        first = self.train.docs[ids[0]].position
        return f"train example ids {ids[:8]}{'...' if len(ids) > 8 else ''}; first {first!r}"

    def recent_ids(self) -> list[int]:
        return sorted({i for ids in self.recent for i in ids})

    def skip(self, ids: list[int]) -> None:
        self.sampler.skipped.update(ids)
        self.recent.clear()

    def save_artifacts(self, run_root: Path) -> None:
        self.data.tokenizer.save(run_root)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.recent.clear()


def text_inputs(rows: TextRows, batch_size: int, device: torch.device) -> list[Inputs]:
    """(ids, lengths) batches of `rows`, in order."""
    out = []
    for start in range(0, len(rows), batch_size):
        x, lengths = rows.rows(range(start, min(start + batch_size, len(rows))))
        out.append((x.to(device), lengths.to(device)))
    return out


def text_batches(
    tokenizer: Tokenizer, texts: list[str], block_size: int, batch_size: int, device: torch.device
) -> list[Inputs]:
    """New texts as a text classifier's input batches (the encoding training used)."""
    ids, lengths = encode_texts(tokenizer, texts, block_size)
    empty = torch.zeros(len(texts), dtype=torch.int64)
    return text_inputs(TextRows(ids, lengths, empty), batch_size, device)


def image_batches(
    scaler: Any, pixels: torch.Tensor, batch_size: int, device: torch.device
) -> list[Inputs]:
    """Images (N, C, H, W) with pixels in [0, 1] as an image classifier's input batches:
    scaled with the run's scaler (fitted on its train split, or its backbone's)."""
    x = scaler.transform(pixels)
    return [(x[i : i + batch_size].to(device),) for i in range(0, len(x), batch_size)]


class LabelledImageBatches:
    """The image families' batches (augmentation, scaling, sampler) with the labels."""

    kind = "image"

    def __init__(self, batches: Any, cfg: ExperimentConfig, device: torch.device):
        self.batches, self.cfg, self.device = batches, cfg, device
        self.sampled = batches  # its sampler, recent batches and skips
        self.classes = list(batches.data.class_names)
        labels = batches.data.labels
        self.labels = {name: labels[getattr(batches.split, name)] for name in ("train", "val")}
        self.labels["test"] = labels[batches.split.test]

    def train_labels(self) -> torch.Tensor:
        return self.labels["train"]

    def next_batch(self) -> tuple[Inputs, torch.Tensor, list[int]]:
        batch = self.batches.next_batch()  # this rank's rows, scaled and augmented
        y = self.batches.shard(self.labels["train"][batch.ids])
        return (batch.x,), y.to(self.device), batch.ids

    def held_out(self, split: str) -> tuple[list[Inputs], torch.Tensor]:
        """The split's input batches, in order, and its labels (N,)."""
        return self.batches_of(self.raw(split)), self.labels[split]

    def raw(self, split: str) -> torch.Tensor:
        """The split's examples before scaling: (N, C, H, W) pixels in [0, 1]."""
        return self.batches.data.images[getattr(self.batches.split, split)]

    def batches_of(self, pixels: torch.Tensor) -> list[Inputs]:
        return image_batches(self.batches.scaler, pixels, self.cfg.train.batch_size, self.device)

    def describe(self, i: int, split: str = "val") -> str:
        return f"image {int(getattr(self.batches.split, split)[i])}"

    def save_artifacts(self, run_root: Path) -> None:
        self.batches.save_scaler(run_root)

    def state_dict(self) -> dict[str, Any]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)


@torch.no_grad()
def classifier_logits(
    model: nn.Module,
    batches: list[Inputs],
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """Logits (N, K) of every batch, in eval mode (the mode is restored), on the CPU."""
    was_training = model.training
    model.eval()
    out = []
    for inputs in batches:
        with autocast or contextlib.nullcontext():
            out.append(model(*inputs).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


class ClassifierFamily:
    name = "classifier"
    throughput_key = "throughput/samples_per_s"
    flops_per_unit = 0.0  # not counted (convolutions, heads): no throughput/mfu
    calibration_step = None  # train.precision auto keeps fp32 (precision.py)

    def __init__(
        self,
        cfg: ExperimentConfig,
        data: TextBatches | LabelledImageBatches,
        built: ClassifierModel,
        device: torch.device,
        autocast: contextlib.AbstractContextManager,
    ):
        self.cfg, self.data, self.device, self.autocast = cfg, data, device, autocast
        self.classes = data.classes
        self.model = built.model.to(device)
        self.train_model: nn.Module = self.model  # DDP wraps it
        self.finetune = built.setup
        self.modules = {"model": self.model}
        self.updaters = [UpdaterSpec("model", self.model, cfg.optim.lr, groups=built.groups)]
        self.units_per_step = cfg.train.batch_size
        train_labels = data.train_labels()
        self.weights = None
        if cfg.classify.class_weights == "balanced":
            self.weights = balanced_weights(train_labels.tolist(), len(self.classes)).to(device)
        self.train_counts = torch.bincount(train_labels, minlength=len(self.classes)).tolist()
        self._val = data.held_out("val")

    def distribute(self, runtime: Any, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Data parallel: this rank's rows of each global batch, the forward through DDP."""
        if isinstance(self.data, TextBatches):
            self.data.shard = runtime.shard
        else:
            self.data.batches.shard = runtime.shard
        self.train_model = wrap(self.model)

    def train_step(self, step: int, update: UpdateFn) -> dict[str, float]:
        if self.finetune is not None and self.finetune.unfreezer is not None:
            self.finetune.unfreezer.apply(step)

        def compute(hook):
            inputs, y, _ = self.data.next_batch()
            with self.autocast:
                logits = self.train_model(*inputs)
            loss = hook(F.cross_entropy(logits.float(), y, weight=self.weights))
            loss.backward()
            return loss.detach()

        update("model", compute)
        return {}

    def after_update(self, name: str) -> None:
        pass

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss, accuracy and macro-F1 on the whole validation split."""
        batches, labels = self._val
        logits = classifier_logits(self.model, batches, self.autocast)
        self._val_logits = logits
        report = classification_report(
            labels.tolist(), logits.argmax(dim=1).tolist(), labels=list(range(len(self.classes)))
        )
        return {
            "val/loss": float(F.cross_entropy(logits, labels)),
            "val/accuracy": report["accuracy"],
            "val/f1_macro": report["macro"]["f1"],
        }

    def findings(self, step: int, evaluated: bool) -> list[Finding]:
        return []

    @torch.no_grad()
    def write_samples(self, step: int, out_dir: Path | None, seed: int) -> None:
        """The first validation examples: true class, predicted class and its probability."""
        if out_dir is None:
            return
        batches, labels = self._val
        probs = classifier_logits(self.model, batches[:1], self.autocast).softmax(dim=1)
        lines = []
        for i in range(min(SAMPLE_ROWS, len(probs))):
            p, k = probs[i].max(dim=0)
            true, said = self.classes[int(labels[i])], self.classes[int(k)]
            lines.append(f"{true} → {said} ({float(p):.2f}): {self.data.describe(i)!r}")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"step-{step}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    # -- the guard's view of the data ----------------------------------------------------------

    # `sampled` draws the train batches (TextBatches itself, or the images' ImageBatches):
    # its sampler, the recent batches' ids and the skips are the guard's view of the data.

    def recent_ids(self) -> list[int]:
        return self.data.sampled.recent_ids()

    def skip(self, ids: list[int]) -> None:
        self.data.sampled.skip(ids)

    def skipped_ids(self) -> set[int]:
        return set(self.data.sampled.sampler.skipped)

    def describe_recent(self) -> str:
        return self.data.sampled.describe_recent()

    # -- state and files -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data.load_state_dict(state["data"])

    def parameter_counts(self) -> dict[str, int]:
        unique = {id(p): p for p in self.model.parameters()}.values()
        return {
            "params/trainable": sum(p.numel() for p in unique if p.requires_grad),
            "params/total": sum(p.numel() for p in unique),
        }

    def on_finish(self, run_root: Path) -> None:
        pass

    def save_data_artifacts(self, run_root: Path) -> None:
        """classes.json (class names, train counts, loss weights) and the tokenizer (text)
        or scaler.json (images): what `genlab predict` needs besides the weights."""
        self.data.save_artifacts(run_root)
        record = {
            "kind": self.data.kind,
            "classes": self.classes,
            "train_counts": dict(zip(self.classes, self.train_counts)),
            "class_weights": None if self.weights is None else self.weights.tolist(),
        }
        (run_root / CLASSES_FILE).write_text(json.dumps(record, indent=2) + "\n", "utf-8")


def read_classes(run_root: Path) -> dict[str, Any]:
    """A classify run's classes.json (a damaged one is a one-line error)."""
    from genlab.errors import CheckpointError

    path = Path(run_root) / CLASSES_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        classes = record["classes"]
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise ValueError("classes is not a list of names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is missing or damaged ({type(exc).__name__}); a classify run keeps "
            "its class names there: restore it, or train the run again"
        ) from None
    return record


# -- builders (training/build.py CLASSIFIERS) ----------------------------------------------------


def build_text_classifier(
    cfg: ExperimentConfig,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    run_root: Path | None = None,
) -> ClassifierFamily:
    """model.family gpt / hf: labelled documents as token rows. The tokenizer comes from
    `run_root` (resume, eval), from the pretrained model (fine-tuning), or is trained on the
    train split."""
    from genlab.data.labelled import build_labelled_text
    from genlab.data.tokenizers import load_tokenizer
    from genlab.training.lm_model import pretrained_tokenizer

    tokenizer = load_tokenizer(run_root) if run_root is not None else pretrained_tokenizer(cfg)
    data = build_labelled_text(cfg, tokenizer)
    built = build_text_classifier_model(cfg, len(data.classes), data.tokenizer.vocab_size)
    return ClassifierFamily(cfg, TextBatches(data, cfg, device), built, device, autocast)


def build_image_classifier(
    cfg: ExperimentConfig,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    run_root: Path | None = None,
) -> ClassifierFamily:
    """model.family vae / gan: labelled images (digits, or a folder with one sub-folder per
    class), scaled as the backbone saw them: the scaler of `run_root`, else of the
    pretrained run, else fitted on the train split."""
    from genlab.training.image_tasks import SCALER_FILE, ImageBatches

    scaler_root = run_root
    if scaler_root is None and cfg.finetune.init_from is not None:
        from genlab.training.lm_model import run_root_of

        scaler_root = run_root_of(cfg.finetune.init_from)
    scaler_state = None
    if scaler_root is not None and (scaler_root / SCALER_FILE).is_file():
        scaler_state = json.loads((scaler_root / SCALER_FILE).read_text(encoding="utf-8"))
    batches = ImageBatches(cfg, device, scaler_state, select=_select_images(cfg))
    data = LabelledImageBatches(batches, cfg, device)
    built = build_image_classifier_model(cfg, len(data.classes), batches.image_shape)
    return ClassifierFamily(cfg, data, built, device, autocast)


def _select_images(cfg: ExperimentConfig) -> Callable[..., Any]:
    """The image split's narrowing for classification: labels required, every class in
    train, the cross-validation fold (data.cv_folds / cv_fold), then classify.label_fraction
    of each class's train images."""
    from genlab.data.images import SplitIndices
    from genlab.data.split import label_fold_ids

    data = cfg.data

    def select(split: SplitIndices, labels: torch.Tensor | None) -> SplitIndices:
        if labels is None:
            raise DataError(
                f"data.source {data.source[:60]!r} has no class sub-folders, so its images "
                "have no labels; put each class's images in a sub-folder named after it"
            )
        train, val = split.train, split.val
        names = [str(v) for v in labels.tolist()]
        check_folds([names[i] for i in train.tolist()], data.cv_folds)
        if data.cv_folds and data.cv_fold is not None:
            folds = torch.tensor(
                label_fold_ids([names[i] for i in train.tolist()], data.cv_folds, cfg.seed, True)
            )
            train, val = train[folds != data.cv_fold], train[folds == data.cv_fold]
        held = {"val": val, "test": split.test}
        class_list(
            [names[i] for i in train.tolist()],
            {k: [names[i] for i in v.tolist()] for k, v in held.items()},
        )
        keep = subsample_per_class(labels[train].tolist(), cfg.classify.label_fraction, cfg.seed)
        return SplitIndices(train[torch.from_numpy(keep)], val, split.test)

    return select


def check_classify_data(cfg: ExperimentConfig) -> None:
    """Read and check a classify config's data (labels, classes, folds) as training would,
    without building a model: the tuner's one clean error before any trial."""
    if cfg.model.family in ("vae", "gan"):
        from genlab.training.image_tasks import ImageBatches

        ImageBatches(cfg, torch.device("cpu"), None, select=_select_images(cfg))
        return
    from genlab.data.labelled import build_labelled_text
    from genlab.training.lm_model import pretrained_tokenizer

    build_labelled_text(cfg, pretrained_tokenizer(cfg))
