"""`genlab eval` for language-model runs: load a run's model, rebuild its held-out split,
compute the requested metrics and merge them into the run's `metrics.json`.

What is measured, and why this way:

- perplexity / nll / bits_per_byte: ONE token-level mean over every non-overlapping window of
  the split's token stream (the tail shorter than a window included), so every target token
  of the split is scored exactly once. The training loop only looks at `train.eval_batches`
  windows; this is the full-split number. `num_samples` picks that many evenly spaced full
  windows instead (faster, still deterministic).
- bleu / chrf: a continuation task. Held-out documents are cut into consecutive segments of
  `prompt_chars + continuation_chars` characters; the model continues each prompt for as many
  tokens as the reference has, and sacrebleu scores the corpus of continuations. Greedy
  decoding by default (deterministic); `temperature > 0` samples with a generator seeded by
  the run's seed. Which one was used is recorded in the details.
- robustness: the text perturbation suite applied to held-out text, NLL per token measured at
  each strength; the value of `robustness/<perturbation>@<strength>` is the increase over the
  clean text. It is slower (one pass per strength), so only computed when asked for.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console

from genlab.config import ExperimentConfig
from genlab.data.documents import Document
from genlab.data.lm import DOC_SEPARATOR
from genlab.data.prepare import read_held_out
from genlab.data.tokenizers import Tokenizer, load_tokenizer
from genlab.errors import CheckpointError, ConfigError, DataError
from genlab.evaluation.report import write_metrics_json
from genlab.evaluation.result import MetricResult, parse_metric_names
from genlab.evaluation.robustness import TEXT_PERTURBATIONS, plot_robustness, robustness_table
from genlab.evaluation.text import (
    continuation_pairs,
    corpus_bleu,
    corpus_chrf,
    score_lm,
    target_byte_counter,
)
from genlab.models.gpt import GPT
from genlab.track.rundir import RunDir, load_run_config, open_existing
from genlab.training import checkpoint as ckpt
from genlab.training.runtime import Autocast, pick_device

if TYPE_CHECKING:
    from genlab.track.progress import WorkProgress

__all__ = [
    "DEFAULT_METRICS",
    "KNOWN_METRICS",
    "LoadedRun",
    "evaluate_run",
    "held_out_documents",
    "load_run_model",
    "parse_metrics",
]

LIKELIHOOD_METRICS = ("perplexity", "nll", "bits_per_byte")
KNOWN_METRICS = (*LIKELIHOOD_METRICS, "bleu", "chrf", "robustness")
DEFAULT_METRICS = (*LIKELIHOOD_METRICS, "bleu", "chrf")
SPLITS = ("val", "test")
DEFAULT_CONTINUATIONS = 100  # pairs scored by BLEU/chrF when num_samples is not given
DEFAULT_ROBUSTNESS_WINDOWS = 64  # window-lengths of held-out text perturbed for robustness
ROBUSTNESS_STRENGTHS = (0.0, 0.05, 0.1, 0.2)


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedRun:
    """A run's pieces needed to use its model: directory, config, tokenizer, weights."""

    run: RunDir
    cfg: ExperimentConfig
    tokenizer: Tokenizer
    model: GPT  # in eval mode, on `device`
    checkpoint: ckpt.CheckpointInfo
    device: torch.device

    def autocast(self) -> Autocast:
        """The run's training precision, for scoring: a bf16 run is scored under bf16 autocast
        as its in-training val/* were (fp16 has no CPU path: fp32 there)."""
        precision = self.cfg.train.precision
        if precision == "fp16" and self.device.type != "cuda":
            precision = "fp32"
        return Autocast(self.device, precision)


def load_run_model(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    device: torch.device | str | None = None,
) -> LoadedRun:
    """Load a run's resolved config, tokenizer and model weights (the last complete
    checkpoint, or `checkpoint`). The model is returned in eval mode on `device` (default:
    the run's `train.device` choice)."""
    run = open_existing(Path(run_dir))  # RunDirError when there is no config.yaml
    cfg = load_run_config(run)
    family = getattr(cfg.model, "family", "gpt")
    if cfg.task != "generate":
        raise ConfigError(
            f"run {str(run.root)!r} is a task {cfg.task!r} run, not a language model; label "
            "inputs with `genlab predict RUN --input FILE` and score it with `genlab eval RUN`"
        )
    if family not in ("gpt", "hf"):
        raise ConfigError(
            f"this evaluation is for language-model runs (model.family gpt or hf), got "
            f"model.family={family!r} in {str(run.config)!r}; image runs are evaluated by "
            "genlab.evaluation.run_images.evaluate_image_run (`genlab eval` picks it itself)"
        )
    info = pick_checkpoint(run, checkpoint)
    tokenizer = load_tokenizer(run.tokenizer_dir)
    # The same builder as training: a fine-tuned run gets its untied head / LoRA layers back
    # before its weights are loaded.
    from genlab.training.lm_model import build_lm_model

    model = build_lm_model(cfg, tokenizer.vocab_size).model
    ckpt.load_checkpoint(info.path, model)
    if (info.path / "ema.safetensors").is_file():  # evaluate and sample with the EMA weights
        ckpt.load_weights(info.path, {"ema": model})
    dev = torch.device(device) if device is not None else pick_device(cfg.train.device)
    model.to(dev).eval()
    return LoadedRun(run, cfg, tokenizer, model, info, dev)


def pick_checkpoint(run: RunDir, checkpoint: str | Path | None) -> ckpt.CheckpointInfo:
    """The checkpoint to use, verified (manifest, hashes, parseable files): `checkpoint` (a
    checkpoints/step-N directory, or just `step-N`) if given, else the run's newest one that
    loads; a damaged newer one is skipped with a warning."""
    existing = ckpt.list_checkpoints(run.checkpoints)
    names = ", ".join(c.path.name for c in existing[-4:]) or "none"
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_dir() and (run.checkpoints / path).is_dir():
            path = run.checkpoints / path  # the short form: --checkpoint step-400
        if not path.is_dir():
            hint = f"--checkpoint {existing[-1].path.name}" if existing else "train it first"
            raise CheckpointError(
                f"--checkpoint {str(checkpoint)[:80]!r} is not a checkpoint directory; run "
                f"{str(run.root)!r} has: {names} (use e.g. {hint})"
            )
        return ckpt.probe(path)
    info, skipped = ckpt.first_usable(ckpt.scan(run.checkpoints)[::-1])
    for why in skipped:
        print(f"genlab: warning: skipped {why}", file=sys.stderr)
    if info is not None:
        return info
    raise CheckpointError(
        f"run {str(run.root)!r} has no usable checkpoint; train it first "
        f"(`genlab resume {run.root}` continues it if it has one) or pass --checkpoint DIR"
    )


def held_out_documents(
    cfg: ExperimentConfig, split: str = "val", run_root: Path | None = None
) -> list[Document]:
    """The documents of `split`, read from the prepared dataset training used (the run's
    data.json names it; when it is gone, the same config and seed prepare it again, which
    splits identically), so evaluation never sees a training document and never re-reads,
    re-cleans or re-deduplicates the source."""
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {list(SPLITS)}, got {split!r}; use --split val")
    if split == "test" and cfg.data.split.test <= 0:
        raise DataError(
            f"this run's data has no test split (data.split.test={cfg.data.split.test}, only "
            f"data.split.val={cfg.data.split.val} is held out); use --split val, or train "
            "with data.split.test=0.1 to get one"
        )
    directory, manifest = _training_dataset(cfg, run_root)
    docs = read_held_out(directory, manifest, split)
    if not docs:
        raise DataError(
            f"the {split} split of this run's data is empty; use --split val or add documents"
        )
    return docs


def _training_dataset(cfg: ExperimentConfig, run_root: Path | None) -> tuple[Path, dict]:
    """(directory, manifest) of the dataset the run trained on: the one its data.json
    names when that still holds the same cache key, else prepared (or found) again."""
    import json

    from genlab.data.lm import DATA_RECORD
    from genlab.data.prepare import keyed_config, prepare_dataset
    from genlab.data.storage import is_cached, read_manifest

    record_path = Path(run_root) / DATA_RECORD if run_root is not None else None
    if record_path is not None and record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            directory = Path(record["dataset_dir"])
            if is_cached(directory, str(record["cache_key"])):
                manifest = read_manifest(directory)
                # Only while the run's config still describes that dataset.
                wanted = keyed_config(cfg.data, cfg.seed)
                if {k: manifest["config"].get(k) for k in wanted} == wanted:
                    return directory, manifest
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # unreadable record: prepare the data again below
    prepared = prepare_dataset(cfg.data, cfg.seed, console=Console(stderr=True, quiet=True))
    return prepared.directory, prepared.manifest


def parse_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """Metric names from a list or a comma-separated string (None: the default set)."""
    return parse_metric_names(metrics, KNOWN_METRICS, DEFAULT_METRICS)


# --------------------------------------------------------------------------- likelihood


def eval_windows(
    tokens: np.ndarray, block_size: int, num_windows: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) windows of the token stream, non-overlapping: window i holds inputs
    tokens[i*T : i*T+T] and targets shifted by one. With num_windows=None every full window
    plus the shorter tail window, so each of tokens[1:] is a target exactly once; otherwise
    `num_windows` evenly spaced full windows. Each returned pair is one (1, T') row."""
    n_targets = len(tokens) - 1
    if n_targets < 1:
        raise DataError(
            f"the held-out text has {len(tokens)} token(s), too few to score; add text or "
            "raise data.split.val"
        )
    n_full = n_targets // block_size
    if num_windows is None:
        starts = [i * block_size for i in range(n_full)]
        if n_targets % block_size:
            starts.append(n_full * block_size)  # the tail
    else:
        if n_full < 1:
            raise DataError(
                f"the held-out text has {len(tokens)} tokens, less than one window of "
                f"data.block_size={block_size}; drop --num-samples to score it whole"
            )
        picks = np.linspace(0, n_full - 1, min(num_windows, n_full)).round().astype(int)
        starts = [int(s) * block_size for s in dict.fromkeys(picks.tolist())]
    t = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    out = []
    for s in starts:
        end = min(s + block_size, n_targets)
        out.append((t[s:end].unsqueeze(0), t[s + 1 : end + 1].unsqueeze(0)))
    return out


Rows = list[tuple[torch.Tensor, torch.Tensor]]  # (input (1, T), target (1, T)) windows


def _batch_spans(rows: Rows, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each batch: runs of same-length rows, at most batch_size each (the
    tail window gets its own batch)."""
    spans, i = [], 0
    while i < len(rows):
        j = i
        while j < len(rows) and j - i < batch_size and rows[j][0].shape == rows[i][0].shape:
            j += 1
        spans.append((i, j))
        i = j
    return spans


def _batched(rows: Rows, spans: list[tuple[int, int]], device: torch.device):
    """The rows of each span stacked into one (B, T) input and target batch."""
    for i, j in spans:
        xs, ys = zip(*rows[i:j], strict=True)
        yield torch.cat(xs).to(device), torch.cat(ys).to(device)


def likelihood_metrics(
    loaded: LoadedRun,
    text: str,
    split: str,
    num_windows: int | None = None,
    progress: WorkProgress | None = None,
) -> dict[str, MetricResult]:
    """perplexity, nll and bits_per_byte of `text` under the run's model (see module doc);
    `progress` shows the batches as they are scored."""
    tokens = np.asarray(loaded.tokenizer.encode(text), dtype=np.int64)
    block = loaded.cfg.data.block_size
    rows = eval_windows(tokens, block, num_windows)
    spans = _batch_spans(rows, loaded.cfg.train.batch_size)
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = _batched(rows, spans, loaded.device)
    if progress is not None:
        batches = progress.track(batches, len(spans), f"{split} likelihood")
    counter = target_byte_counter(loaded.tokenizer)
    score = score_lm(loaded.model, batches, counter, autocast=loaded.autocast())
    extra = {"windows": len(rows), "block_size": block, "tokens_in_split": len(tokens)}
    return score.results(split, extra)


# --------------------------------------------------------------------------- continuation


def _segments(docs: list[Document], length: int) -> list[str]:
    """Consecutive `length`-character segments of every document (the remainder dropped), so
    a long held-out document yields many prompts rather than one."""
    return [
        d.text[k * length : (k + 1) * length] for d in docs for k in range(len(d.text) // length)
    ]


def _evenly(items: list[Any], n: int) -> list[Any]:
    if n >= len(items):
        return list(items)
    picks = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in dict.fromkeys(picks.tolist())]


@torch.no_grad()
def continuations(
    loaded: LoadedRun,
    prompts: list[str],
    lengths: list[int],
    temperature: float = 0.0,
    progress: WorkProgress | None = None,
) -> list[str]:
    """Continue each prompt by lengths[i] tokens; prompts of equal token length and equal
    continuation length share a batch. Greedy at temperature 0, else seeded sampling;
    `progress` shows the batches as they are generated."""
    tok, model, device = loaded.tokenizer, loaded.model, loaded.device
    ids = [tok.encode(p) or tok.encode("\n") for p in prompts]
    out: list[str] = [""] * len(prompts)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (p, n) in enumerate(zip(ids, lengths, strict=True)):
        groups.setdefault((len(p), n), []).append(i)
    g = torch.Generator(device=device).manual_seed(loaded.cfg.seed)
    bs = loaded.cfg.train.batch_size
    chunks = [
        (plen, n, members[k : k + bs])
        for (plen, n), members in sorted(groups.items())
        for k in range(0, len(members), bs)
    ]
    todo: Iterable[tuple[int, int, list[int]]] = chunks
    if progress is not None:
        todo = progress.track(chunks, len(chunks), "continuations")
    for plen, n, chunk in todo:
        x = torch.tensor([ids[i] for i in chunk], dtype=torch.long, device=device)
        y = model.generate(x, max(n, 1), temperature, top_k=None, generator=g)
        for row, i in enumerate(chunk):
            out[i] = tok.decode(y[row, plen:].tolist())
    return out


def continuation_metrics(
    loaded: LoadedRun,
    docs: list[Document],
    names: list[str],
    split: str,
    num_pairs: int,
    prompt_chars: int,
    continuation_chars: int,
    temperature: float,
    progress: WorkProgress | None = None,
) -> dict[str, MetricResult]:
    """Corpus BLEU and/or chrF of the model's continuations of held-out prompts."""
    need = prompt_chars + continuation_chars
    # continuation_pairs raises the clear "no document is long enough" error when needed.
    pool = continuation_pairs(
        _segments(docs, need) or [d.text for d in docs], prompt_chars, continuation_chars
    )
    pairs = _evenly(pool, num_pairs)
    prompts, refs = [p for p, _ in pairs], [r for _, r in pairs]
    lengths = [len(loaded.tokenizer.encode(r)) for r in refs]
    hyps = continuations(loaded, prompts, lengths, temperature, progress)
    decoding = (
        "greedy"
        if temperature <= 0
        else f"sampled (temperature={temperature}, seed={loaded.cfg.seed})"
    )
    task = {
        "decoding": decoding,
        "prompt_chars": prompt_chars,
        "continuation_chars": continuation_chars,
        "pairs_available": len(pool),
        "example": {"prompt": prompts[0][-80:], "reference": refs[0], "output": hyps[0]},
    }
    results = {}
    if "bleu" in names:
        r = corpus_bleu(hyps, refs, split=split)
        results["bleu"] = replace(r, details={**r.details, **task})
    if "chrf" in names:
        r = corpus_chrf(hyps, refs, split=split)
        results["chrf"] = replace(r, details={**r.details, **task})
    return results


# --------------------------------------------------------------------------- robustness


def _robustness_texts(docs: list[Document], budget_chars: int) -> list[str]:
    """Held-out documents in order, the last one cut, up to `budget_chars` characters."""
    texts, used = [], 0
    for d in docs:
        if used >= budget_chars:
            break
        texts.append(d.text[: budget_chars - used])
        used += len(texts[-1])
    return texts


def robustness_metrics(
    loaded: LoadedRun,
    docs: list[Document],
    split: str,
    num_windows: int,
    progress: WorkProgress | None = None,
) -> dict[str, MetricResult]:
    """NLL per token under each text perturbation and strength; writes plots/robustness.png.
    `progress` counts the texts scored (the clean one, then each perturbation x strength)."""
    texts = _robustness_texts(docs, num_windows * loaded.cfg.data.block_size)
    cache: dict[str, MetricResult] = {}
    calls = 1 + len(TEXT_PERTURBATIONS) * len(ROBUSTNESS_STRENGTHS)  # robustness_table's
    scored = progress.counter(calls, "robustness") if progress is not None else (lambda: None)

    def nll(perturbed: list[str]) -> MetricResult:
        joined = DOC_SEPARATOR.join(perturbed)
        if joined not in cache:  # strength 0 returns the clean text: scored once
            cache[joined] = likelihood_metrics(loaded, joined, split)["nll"]
        return cache[joined]

    def counted_nll(perturbed: list[str]) -> MetricResult:
        result = nll(perturbed)
        scored()
        return result

    seed = loaded.cfg.seed
    table = robustness_table(counted_nll, texts, TEXT_PERTURBATIONS, ROBUSTNESS_STRENGTHS, seed)
    plot = plot_robustness(table, loaded.run.plots / "robustness.png", "NLL per token (nats)")
    baseline = nll(texts)
    results = {}
    for row in table:
        if row["strength"] == 0:
            continue
        key = f"robustness/{row['perturbation']}@{row['strength']:g}"
        perturbed = TEXT_PERTURBATIONS[row["perturbation"]](texts, row["strength"], seed)
        details = {
            "unit": "nats per token, perturbed minus clean",
            "nll": row["metric"],
            "clean_nll": baseline.value,
            "clean_tokens": baseline.n,
            "strength": row["strength"],
            "seed": seed,
            "plot": str(plot.relative_to(loaded.run.root)),
        }
        results[key] = MetricResult(key, row["delta"], nll(perturbed).n, split, details)
    return results


# --------------------------------------------------------------------------- entry point


def evaluate_run(
    run_dir: str | Path,
    split: str = "val",
    metrics: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    checkpoint: str | Path | None = None,
    console: Console | None = None,
    *,
    prompt_chars: int = 200,
    continuation_chars: int = 100,
    temperature: float = 0.0,
    write: bool = True,
) -> dict[str, MetricResult]:
    """Evaluate a trained LM run on its held-out `split` and merge the results into
    `run_dir/metrics.json` (flat `<split>/<metric>` keys plus `details`; see report.py).

    metrics: names from KNOWN_METRICS (list or "a,b"); None means DEFAULT_METRICS.
    num_samples: windows for the likelihood metrics (None: all), continuation pairs for
    BLEU/chrF (None: DEFAULT_CONTINUATIONS), windows of text for robustness.
    checkpoint: a checkpoints/step-N directory; None means the last complete one.
    Returns {metric name: MetricResult}, in the order the names were asked for."""
    names = parse_metrics(metrics)
    if num_samples is not None and (isinstance(num_samples, bool) or num_samples < 1):
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}; use e.g. 100")
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {list(SPLITS)}, got {split!r}; use --split val")
    if not temperature >= 0:  # also catches NaN
        raise ConfigError(f"temperature must be >= 0, got {temperature}; 0 means greedy")
    loaded = load_run_model(run_dir, checkpoint)
    docs = held_out_documents(loaded.cfg, split, loaded.run.root)
    say = console.print if console is not None else (lambda *_: None)
    say(
        f"evaluating {loaded.run.root} at step {loaded.checkpoint.step} on {split} "
        f"({len(docs)} documents): {', '.join(names)}"
    )
    from genlab.track.progress import WorkProgress

    results: dict[str, MetricResult] = {}
    with torch.no_grad(), WorkProgress(console, "eval") as bar:
        if any(n in LIKELIHOOD_METRICS for n in names):
            text = DOC_SEPARATOR.join(d.text for d in docs)
            lik = likelihood_metrics(loaded, text, split, num_samples, bar)
            results.update({n: lik[n] for n in names if n in LIKELIHOOD_METRICS})
        if "bleu" in names or "chrf" in names:
            results.update(
                continuation_metrics(
                    loaded,
                    docs,
                    names,
                    split,
                    num_samples or DEFAULT_CONTINUATIONS,
                    prompt_chars,
                    continuation_chars,
                    temperature,
                    bar,
                )
            )
        if "robustness" in names:
            n_windows = num_samples or DEFAULT_ROBUSTNESS_WINDOWS
            results.update(robustness_metrics(loaded, docs, split, n_windows, bar))
    ordered = {k: results[k] for n in names for k in results if k == n or k.startswith(n + "/")}
    if write:
        path = write_metrics_json(loaded.run.root, ordered, split, loaded.checkpoint)
        say(f"wrote {path}")
    if any(not math.isfinite(r.value) for r in ordered.values()):
        say("[yellow]warning[/]: some metrics are not finite (see metrics.json)")
    return ordered
