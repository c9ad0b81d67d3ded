"""The Python API: the functions behind every `genlab` command, one each.

    import genlab
    cfg = genlab.load_config("examples/lm.yaml", ["train.max_steps=200"])
    result = genlab.train(cfg, "runs/lm")              # RunResult: step, final_metrics, guard
    genlab.resume("runs/lm", ["train.max_steps=400"])  # continue from the last healthy checkpoint
    scores = genlab.evaluate("runs/lm", split="val")   # {name: MetricResult}, into metrics.json
    print(genlab.generate("runs/lm", prompt="The for statement", seed=1))
    rows = genlab.predict("runs/topics", "texts.jsonl")  # a classify run: labels + probabilities
    study = genlab.tune("examples/tune-lm.yaml", ["tune.n_trials=10"])
    genlab.compress("runs/lm", ["compress.quantize=int8_dynamic"])  # runs/lm/compressed/...
    genlab.export("runs/lm", "hf")                     # runs/lm/export/hf, with export.json
    genlab.report("runs/lm")                           # runs/lm/report.html (train writes it too)
    genlab.compare(["runs/lm", "runs/lm2"], "compare.html")
    for run in genlab.runs("runs"): print(run.name, run.status, run.value)

Each function takes what the command takes and raises what the command turns into an exit
code: a `genlab.errors.GenlabError` for input the caller can fix (exit 2), `GuardAbort` when the
stability guard stopped a run (exit 3).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from genlab.errors import ConfigError

# `genlab export`: the implementation is the API function (its module imports nothing heavy).
from genlab.exporters.job import export_run as export
from genlab.registry import Registry

if TYPE_CHECKING:
    from rich.console import Console

    from genlab.compression.run import CompressionResult
    from genlab.config import ExperimentConfig
    from genlab.evaluation.result import MetricResult
    from genlab.image_generation import GeneratedImages
    from genlab.track.runs import RunSummary
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
    _check_tracking(cfg)
    _check_data_source(cfg)
    target = Path(run_dir) if run_dir is not None else Path("runs") / cfg.name
    from genlab.track.rundir import check_new
    from genlab.training.elastic import launched_by_genlab

    if not launched_by_genlab():  # its launcher checked before starting this worker
        check_new(target, overwrite)  # an unusable run directory fails before torch loads
    from genlab.training.loop import train as train_run

    return _then_finish(
        target, console, lambda: train_run(cfg, target, overwrite=overwrite, console=console)
    )


def resume(
    run_dir: str | Path, overrides: Sequence[str] | None = None, *, console: Console | None = None
) -> RunResult:
    """Continue a run from its last healthy checkpoint (overrides such as
    `train.max_steps=2000` extend it), exactly as if it had never stopped."""
    from genlab import config
    from genlab.track.rundir import open_existing

    run = open_existing(Path(run_dir))
    _check_tracking(config.load(run.config, list(overrides or [])))
    # Every rank of a torchrun launch probes too: an empty folder made and removed, no race.
    _check_writable_run(
        run_dir,
        "genlab resume writes checkpoints, metrics and plots into the run directory: copy the "
        "run to a writable folder and resume the copy",
        (run.checkpoints, run.plots, run.samples),
    )
    from genlab.training.loop import resume as resume_run  # torch: after the checks above

    return _then_finish(
        Path(run_dir),
        console,
        lambda: resume_run(Path(run_dir), list(overrides or []), console=console),
    )


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
    threads: int | None = None,
    console: Console | None = None,
) -> dict[str, MetricResult]:
    """Evaluate a run on its held-out `split` and merge the results into its metrics.json.
    `metrics`: names (a list or "a,b"); None evaluates the family's default set. `threads`:
    CPU threads (default: at most the CPUs this process may use)."""
    cfg = _run_config(run_dir)
    _check_writable_run(
        run_dir,
        "genlab eval records its results in the run directory: copy the run to a writable "
        "folder and evaluate the copy",
    )
    where = f"{run_dir}/config.yaml"
    if cfg.task == "generate":
        evaluator = EVALUATORS.lookup(cfg.model.family, where=where)
    else:
        evaluator = TASK_EVALUATORS.lookup(cfg.task, where=where)
    _use_threads(threads)
    results = evaluator(
        run_dir,
        split=split,
        metrics=metrics,
        num_samples=num_samples,
        checkpoint=checkpoint,
        console=console,
    )
    _finish(Path(run_dir), console)
    return results


def _check_writable_run(run_dir: str | Path, fix: str, inside: Sequence[Path] = ()) -> None:
    """A command that writes into a run (eval merges its results, resume adds checkpoints,
    metrics and plots) refuses a run directory that takes no writes (a read-only mount, an
    immutable folder), and any of its sub-folders `inside` that exist and take none, before
    the work rather than with a traceback after it; `fix` ends the one-line message."""
    from genlab.errors import RunDirError
    from genlab.fileio import unwritable

    for folder in (Path(run_dir), *(p for p in inside if p.is_dir())):
        why = unwritable(folder)
        if why is not None:
            raise RunDirError(f"{why}; {fix}")


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


def compress(
    run_dir: str | Path,
    overrides: Sequence[str] | None = None,
    out: str | Path | None = None,
    *,
    sweep: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
) -> CompressionResult:
    """Prune and/or quantize a trained run (its `compress:` section, `compress.*` overrides)
    into a new run directory (default RUN_DIR/compressed/<name>) and measure the original and
    the result: `CompressionResult.rows` is the table in compression.json. `sweep`: the
    default grid, each setting its own run, one table and plot in `out`."""
    from genlab.compression.settings import resolve

    request = resolve(run_dir, list(overrides or []), out, sweep, overwrite)  # before torch
    from genlab.compression.run import compress_request

    return compress_request(request, overwrite, console)


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


def report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained report.html of a run or study directory (default
    PATH/report.html; train, resume, eval and tune write it too) and return its path."""
    from genlab.track.report import write_report

    return write_report(path, out)


def compare(run_dirs: Sequence[str | Path], out: str | Path = "compare.html") -> Path:
    """Write compare.html for two or more runs (curves overlaid, the config keys that differ,
    best and final metrics, mean ± std over seeds) and return its path."""
    from genlab.track.report import write_comparison

    return write_comparison(list(run_dirs), out)


def runs(root: str | Path = "runs") -> list[RunSummary]:
    """Every run directory below `root`: name, family, status (finished, aborted, running,
    crashed), steps, final metric, wall time, guard events."""
    from genlab.track.runs import list_runs

    return list_runs(root)


T = TypeVar("T")


def _check_data_source(cfg: ExperimentConfig) -> None:
    """A text data.source that names nothing is exit 2 before torch is imported (the data
    pipeline resolves it again; image sources are checked by their loader)."""
    from genlab.config import IMAGE_FAMILIES

    if cfg.model.family not in IMAGE_FAMILIES:
        from genlab.data.corpus import resolve_source

        resolve_source(cfg.data.source)


def _check_tracking(cfg: ExperimentConfig) -> None:
    """The `track:` tools are installed (exit 2 with the install hint before any work)."""
    from genlab.track.sinks import check_sinks

    check_sinks(cfg.track)


def _finish(run_dir: Path, console: Console | None) -> None:
    """report.html and the MLflow run's files after a command (rank 0; never raises)."""
    if os.environ.get("RANK", "0") != "0":
        return
    from rich.console import Console

    from genlab.track.finish import finish_run

    finish_run(run_dir, console or Console(stderr=True))


def _then_finish(run_dir: Path, console: Console | None, work: Callable[[], T]) -> T:
    """`work()`, then `_finish` — also after a guard abort (that run's report is the one
    to read), never after an error before the run started."""
    from genlab.errors import GuardAbort

    try:
        result = work()
    except GuardAbort:
        _finish(run_dir, console)
        raise
    _finish(run_dir, console)
    return result


__all__ = [
    "EVALUATORS",
    "GENERATORS",
    "TASK_EVALUATORS",
    "compare",
    "compress",
    "evaluate",
    "export",
    "generate",
    "load_config",
    "predict",
    "report",
    "resume",
    "run_family",
    "runs",
    "train",
    "tune",
]
