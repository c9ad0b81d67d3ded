"""The Python API: the functions behind every `genlab` command, one each.

    import genlab
    cfg = genlab.load_config("examples/lm.yaml", ["train.max_steps=200"])
    result = genlab.train(cfg, "runs/lm")              # RunResult: step, final_metrics, guard
    genlab.resume("runs/lm", ["train.max_steps=400"])  # continue from the last healthy checkpoint
    scores = genlab.evaluate("runs/lm", split="val")   # {name: MetricResult}, into metrics.json
    print(genlab.generate("runs/lm", prompt="The for statement", seed=1))
    rows = genlab.predict("runs/topics", "texts.jsonl")  # a classify run: labels + probabilities
    study = genlab.tune("examples/tune-lm.yaml", ["tune.n_trials=10"])

Each function takes what the command takes and raises what the command turns into an exit
code: a `genlab.errors.GenlabError` for input the caller can fix (exit 2), `GuardAbort` when the
stability guard stopped a run (exit 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genlab.errors import ConfigError
from genlab.registry import Registry

if TYPE_CHECKING:
    from rich.console import Console

    from genlab.config import ExperimentConfig
    from genlab.evaluation.result import MetricResult
    from genlab.training.loop import RunResult
    from genlab.tuning.runner import StudyResult

# model.family -> the `genlab eval` implementation for its runs (task generate).
EVALUATORS = Registry(
    "model family to evaluate",
    {
        "gpt": "genlab.evaluation.run:evaluate_run",
        "hf": "genlab.evaluation.run:evaluate_run",
        "vae": "genlab.evaluation.run_images:evaluate_image_run",
        "gan": "genlab.evaluation.run_images:evaluate_image_run",
    },
)
# task -> the `genlab eval` implementation for its runs, whatever the backbone's family.
TASK_EVALUATORS = Registry(
    "task to evaluate",
    {"classify": "genlab.evaluation.run_classify:evaluate_classifier_run"},
)


def load_config(
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | None = None,
) -> ExperimentConfig:
    """A validated config from a YAML file, a mapping, or the defaults (None), with dotted
    `key=value` overrides applied (values parsed as YAML). Raises ConfigError listing every
    problem at once."""
    from genlab import config

    if isinstance(source, Mapping):
        raw = config.apply_overrides(dict(source), list(overrides or []))
        raw.setdefault("name", "run")
        return config.from_dict(raw, origin="mapping")
    return config.load(source, list(overrides or []))


def _as_config(source: Any, overrides: Sequence[str] | None) -> ExperimentConfig:
    from genlab.config import ExperimentConfig

    if isinstance(source, ExperimentConfig):
        if overrides:
            return load_config(source.to_dict(), overrides)
        return source
    return load_config(source, overrides)


def train(
    config: str | Path | ExperimentConfig | Mapping[str, Any] | None,
    run_dir: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Train from scratch into `run_dir` (default runs/<name>); a non-empty directory is
    refused unless `overwrite`. Returns the final step, metrics and guard counters."""
    cfg = _as_config(config, overrides)  # a bad config fails before torch is imported
    target = Path(run_dir) if run_dir is not None else Path("runs") / cfg.name
    from genlab.training.loop import train as train_run

    return train_run(cfg, target, overwrite=overwrite, console=console)


def resume(
    run_dir: str | Path, overrides: Sequence[str] | None = None, *, console: Console | None = None
) -> RunResult:
    """Continue a run from its last healthy checkpoint (overrides such as
    `train.max_steps=2000` extend it), exactly as if it had never stopped."""
    from genlab.training.loop import resume as resume_run

    return resume_run(Path(run_dir), list(overrides or []), console=console)


def run_family(run_dir: str | Path) -> str:
    """model.family of a run directory (RunDirError when it is not one)."""
    return _run_config(run_dir).model.family


def _run_config(run_dir: str | Path) -> ExperimentConfig:
    from genlab.track.rundir import load_run_config, open_existing

    return load_run_config(open_existing(Path(run_dir)))


def evaluate(
    run_dir: str | Path,
    split: str = "val",
    metrics: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    checkpoint: str | Path | None = None,
    *,
    console: Console | None = None,
) -> dict[str, MetricResult]:
    """Evaluate a run on its held-out `split` and merge the results into its metrics.json.
    `metrics`: names (a list or "a,b"); None evaluates the family's default set."""
    cfg = _run_config(run_dir)
    where = f"{run_dir}/config.yaml"
    if cfg.task == "generate":
        evaluator = EVALUATORS.lookup(cfg.model.family, where=where)
    else:
        evaluator = TASK_EVALUATORS.lookup(cfg.task, where=where)
    return evaluator(
        run_dir,
        split=split,
        metrics=metrics,
        num_samples=num_samples,
        checkpoint=checkpoint,
        console=console,
    )


def generate(
    run_dir: str | Path,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
) -> str:
    """A sampled continuation of `prompt` from a language-model run (temperature 0: greedy)."""
    from genlab.generation import generate as generate_text

    return generate_text(
        run_dir, prompt, max_new_tokens, temperature, top_k, top_p, seed, checkpoint
    )


def predict(
    run_dir: str | Path,
    input: str | Path,
    output: str | Path | None = None,
    checkpoint: str | Path | None = None,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """Label new texts (a .jsonl / .csv / .tsv with the run's data.text_field, or a .txt with
    one text per line) or images (a PNG/JPEG file or a folder of them) with a classify run:
    one row per input, {"id", "label", "probs": {class: probability}}, in input order;
    also written to `output` (.jsonl or .csv) when given."""
    from genlab.prediction import predict as predict_labels

    return predict_labels(run_dir, input, output, checkpoint, batch_size)


def tune(
    config: str | Path | None,
    overrides: Sequence[str] | None = None,
    study_dir: str | Path | None = None,
    workers: int = 1,
    *,
    console: Console | None = None,
) -> StudyResult:
    """Run (or resume) the hyperparameter search of the config's `tune:` section in
    `study_dir` (default studies/<name>); `genlab.tuning.print_summary(result)` prints it."""
    from genlab.tuning import run_study

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}; use e.g. --workers 2")
    return run_study(
        None if config is None else Path(config),
        list(overrides or []),
        None if study_dir is None else Path(study_dir),
        workers,
        console=console,
    )


__all__ = [
    "EVALUATORS",
    "TASK_EVALUATORS",
    "evaluate",
    "generate",
    "load_config",
    "predict",
    "resume",
    "run_family",
    "train",
    "tune",
]
