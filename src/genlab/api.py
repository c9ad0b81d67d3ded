"""The Python API: the functions behind every `genlab` command, one each.

    import genlab
    cfg = genlab.load_config("examples/lm.yaml", ["train.max_steps=200"])
    result = genlab.train(cfg, "runs/lm")              # RunResult: step, final_metrics, guard
    genlab.resume("runs/lm", ["train.max_steps=400"])  # continue from the last healthy checkpoint
    scores = genlab.evaluate("runs/lm", split="val")   # {name: MetricResult}, into metrics.json
    print(genlab.generate("runs/lm", prompt="The for statement", seed=1))
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
    from genlab.image_generation import GeneratedImages
    from genlab.training.loop import RunResult
    from genlab.tuning.runner import StudyResult

# model.family -> the `genlab eval` implementation for its runs.
EVALUATORS = Registry(
    "model family to evaluate",
    {
        "gpt": "genlab.evaluation.run:evaluate_run",
        "hf": "genlab.evaluation.run:evaluate_run",
        "vae": "genlab.evaluation.run_images:evaluate_image_run",
        "gan": "genlab.evaluation.run_images:evaluate_image_run",
    },
)

# model.family -> what `genlab generate` does for its runs: text from a prompt, or an image
# grid. The options a family takes are its generator's keyword parameters.
GENERATORS = Registry(
    "model family to generate from",
    {
        "gpt": "genlab.generation:generate",
        "hf": "genlab.generation:generate",
        "vae": "genlab.image_generation:generate_images",
        "gan": "genlab.image_generation:generate_images",
    },
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
    from genlab.track.rundir import load_run_config, open_existing

    return load_run_config(open_existing(Path(run_dir))).model.family


def evaluate(
    run_dir: str | Path,
    split: str = "val",
    metrics: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    checkpoint: str | Path | None = None,
    *,
    threads: int | None = None,
    console: Console | None = None,
) -> dict[str, MetricResult]:
    """Evaluate a run on its held-out `split` and merge the results into its metrics.json.
    `metrics`: names (a list or "a,b"); None evaluates the family's default set. `threads`:
    CPU threads (default: at most the CPUs this process may use)."""
    evaluator = EVALUATORS.lookup(run_family(run_dir), where=f"{run_dir}/config.yaml")
    _use_threads(threads)
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
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    *,
    num_samples: int | None = None,
    out: str | Path | None = None,
    threads: int | None = None,
) -> str | GeneratedImages:
    """Sample from a run, as its model family does (GENERATORS): a language-model run gives
    `prompt` and its continuation (no prompt: a new document; max_new_tokens 200, temperature
    0.8 (0: greedy), top_k 50 (0: off), top_p off); a VAE or GAN run writes a grid of
    `num_samples` (64) images to `out` (default RUN_DIR/samples/generated-step-N-seed-S.png;
    a VAE adds its reconstructions) and returns where. None means the family's default; an
    option the family does not take is a ConfigError. `threads`: CPU threads (default: at most
    the CPUs this process may use)."""
    import inspect

    family = run_family(run_dir)
    generator = GENERATORS.lookup(family, where=f"{run_dir}/config.yaml")
    given = {
        "prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": temperature,
        "top_k": top_k, "top_p": top_p, "num_samples": num_samples, "out": out,
    }  # fmt: skip
    options = {k: v for k, v in given.items() if v is not None}
    takes = inspect.signature(generator).parameters
    foreign = [k for k in options if k not in takes]
    if foreign:
        usable = ", ".join(f"--{k.replace('_', '-')}" for k in given if k in takes)
        raise ConfigError(
            f"--{foreign[0].replace('_', '-')} does not apply to a {family} run "
            f"({str(run_dir)[:80]!r}); it takes {usable}, --seed and --checkpoint"
        )
    _use_threads(threads)
    return generator(run_dir, seed=seed, checkpoint=checkpoint, **options)


def _use_threads(threads: int | None) -> None:
    from genlab.threads import use_threads

    if threads is not None and not 1 <= threads <= 1024:
        raise ConfigError(f"--threads must be in [1, 1024], got {threads}; use e.g. 2")
    use_threads(threads)


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
    "GENERATORS",
    "evaluate",
    "generate",
    "load_config",
    "resume",
    "run_family",
    "train",
    "tune",
]
