"""Study outputs: trials.csv, best.yaml, PNG plots and the console summary table."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from genlab.track.console import make_console
from genlab.tuning.bugs import ERROR_FILE
from genlab.tuning.storage import retried_numbers


def write_trials_csv(study: Any, path: Path, param_keys: list[str]) -> None:
    """One row per trial: params, value per run (fold/seed), state, duration, steps, guard
    events, the failure reason and, for a bug, its traceback file (relative to the study dir)."""
    # WAITING trials are queue slots no one ran (or spare copies of one: genlab.tuning.queue).
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
    retried = retried_numbers(study)
    runs: list[str] = []
    for t in trials:
        runs.extend(r for r in t.user_attrs.get("values", {}) if r not in runs)
    header = [
        "number",
        "state",
        "value",
        *param_keys,
        *[f"value:{r}" for r in runs],
        "mean",
        "std",
        "duration_s",
        "steps",
        "guard_events",
        "failure",
        ERROR_FILE,
        "retry_of",
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for t in trials:
            ua = t.user_attrs
            values = ua.get("values", {})
            duration = t.duration.total_seconds() if t.duration is not None else ""
            failure = ua.get("failure", "")
            if not failure and t.number in retried:
                failure = f"worker stopped; re-run as trial {retried[t.number]}"
            history = t.system_attrs.get("retry_history", [])
            guard = ua.get("guard", {})
            w.writerow(
                [
                    t.number,
                    t.state.name,
                    "" if t.value is None else t.value,
                    *[t.params.get(k, "") for k in param_keys],
                    *[values.get(r, "") for r in runs],
                    ua.get("mean", ""),
                    ua.get("std", ""),
                    f"{duration:.2f}" if duration != "" else "",
                    ua.get("steps", ""),
                    " ".join(f"{k}x{n}" for k, n in sorted(guard.items())),
                    failure,
                    ua.get(ERROR_FILE, ""),
                    history[0] if history else "",
                ]
            )


def write_best_yaml(raw: dict[str, Any], path: Path, header: str) -> None:
    """A complete config `genlab train best.yaml` runs as is: no tune section at all."""
    clean = {k: v for k, v in raw.items() if k != "tune"}
    text = yaml.safe_dump(clean, sort_keys=False)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + text, encoding="utf-8")


def best_yaml_expectation(trial: Any, winner: Any, seed: int, metric: str) -> str:
    """What training best.yaml gives, and why it differs from the study's number: one run on
    `seed`, where the study's value is a mean over runs (seed noise). `winner`: the final
    stage's FinalRow of this trial, or None."""
    runs = trial.user_attrs.get("values", {})
    shown = ", ".join(f"{name} {value:.6g}" for name, value in runs.items())
    spread = f" (± {winner.ci95:.3g}, 95% CI of the mean)" if winner and winner.values else ""
    folds = any(name.startswith("fold") for name in runs)
    return (
        f"It trains once, on seed {seed}: {metric} differs from the value above by seed noise"
        f"{spread}. This config's search runs gave: {shown or 'n/a'}"
        + (" (each on a CV fold; this trains on the whole train split)." if folds else ".")
    )


def write_plots(
    study: Any, plot_dir: Path, metric: str, winner: int | None = None
) -> tuple[list[Path], list[str]]:
    """Optuna's matplotlib plots as PNGs, their value axes named `metric`; on the history, the
    trial the final stage picked on fresh seeds (`winner`) is marked, as Optuna's best line
    follows the search's own values. Returns (written, skipped with the reason)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    plot_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots = {
        "history": vis.plot_optimization_history,
        "importance": vis.plot_param_importances,
        "parallel": vis.plot_parallel_coordinate,
        "slice": vis.plot_slice,
    }
    written, skipped = [], []
    for name, fn in plots.items():
        if not complete:
            skipped.append(f"{name}: no completed trial")
            continue
        if name == "importance" and len(complete) < 2:
            skipped.append(f"{name}: needs >= 2 completed trials, have {len(complete)}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study, target_name=metric)
            axes = list(ax.flat) if hasattr(ax, "flat") else [ax]
            if name in ("slice", "parallel"):  # log-scale ticks and long key names overlap
                for each in axes:
                    each.tick_params(axis="x", labelrotation=30)
            if name == "parallel":
                _full_axis_names(axes[0], sorted({k for t in complete for k in t.params}))
            if name == "history" and winner is not None:
                _mark_winner(axes[0], study, winner)
            fig = axes[0].figure
            fig.set_size_inches(max(fig.get_size_inches()[0], 8), 5)
            path = plot_dir / f"{name}.png"
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
        except Exception as exc:  # e.g. importance on a space with no variation
            skipped.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        finally:
            plt.close("all")
    return written, skipped


def _full_axis_names(ax: Any, keys: list[str]) -> None:
    """Optuna shortens long parameter names on the parallel plot ("schedule.warmup_s..."):
    put the whole config key back."""
    texts = []
    for label in ax.get_xticklabels():
        text = label.get_text()
        whole = [k for k in keys if text.endswith("...") and k.startswith(text[:-3])]
        texts.append(whole[0] if len(whole) == 1 else text)
    ax.set_xticks(ax.get_xticks(), texts)


def _mark_winner(ax: Any, study: Any, number: int) -> None:
    trial = study.trials[number]
    if trial.value is None:
        return
    ax.scatter([number], [trial.value], marker="*", s=220, color="crimson", zorder=5,
               label=f"picked on fresh seeds: trial {number}")  # fmt: skip
    ax.legend(loc="best")


def final_notes(result: Any) -> list[str]:
    """What the final stage's numbers mean next to the search's: overlapping intervals, and a
    winner other than the search's best (history.png's best line)."""
    notes = []
    scored = [r for r in result.final if r.values]
    winner = result.winner
    if winner is not None and len(scored) >= 2:
        sign = 1.0 if result.direction == "minimize" else -1.0
        runner_up = min((r for r in scored if r is not winner), key=lambda r: sign * r.mean)
        gap = abs(winner.mean - runner_up.mean)
        widths = [w for w in (winner.ci95, runner_up.ci95) if not math.isnan(w)]
        if widths and gap < sum(widths):
            notes.append(
                f"final: trial {winner.trial} ({_fmt(winner.mean)} ± {_fmt(winner.ci95)}) and "
                f"trial {runner_up.trial} ({_fmt(runner_up.mean)} ± {_fmt(runner_up.ci95)}) "
                "have overlapping 95% intervals: the winner is not clearly better (more "
                "tune.final.seeds narrow them)"
            )
    if winner is not None and result.top and result.top[0]["number"] != winner.trial:
        notes.append(
            f"the search's best was trial {result.top[0]['number']} (history.png's best line); "
            f"on fresh seeds trial {winner.trial} did better and is best.yaml"
        )
    return notes


def print_summary(result: Any, console: Console | None = None, top: int = 10) -> None:
    """The console summary of a StudyResult: best trials table, counts, final stage, files."""
    console = console or make_console()
    table = Table(title=f"study {result.study_name}: {result.metric} ({result.direction})")
    table.add_column("#", justify="right")
    table.add_column("value", justify="right")
    for key in result.param_keys:
        table.add_column(key)
    table.add_column("steps", justify="right")
    for row in result.top[:top]:
        table.add_row(
            str(row["number"]),
            _fmt(row["value"]),
            *[_fmt(row["params"].get(k, "-")) for k in result.param_keys],
            str(row.get("steps", "")),
        )
    console.print(table)
    console.print(
        f"trials: {result.n_complete} complete, {result.n_pruned} pruned, "
        f"{result.n_failed} failed; {result.steps_trained:,} training steps; sampler "
        f"{result.sampler}"
    )
    for number, reason in result.failures[:5]:
        console.print(f"  [red]failed[/] trial {number}: {reason}")
    if result.final:
        ft = Table(title="final: top configs on fresh seeds (mean ± 95% CI, t)")
        for col in ("trial", "mean", "± ci95", "n", "failures"):
            ft.add_column(col)
        for r in result.final:
            mark = " *" if result.winner is not None and r.trial == result.winner.trial else ""
            ft.add_row(
                f"{r.trial}{mark}",
                _fmt(r.mean),
                _fmt(r.ci95),
                str(len(r.values)),
                str(len(r.failures)),
            )
        console.print(ft)
    for note in final_notes(result):
        console.print(note)
    noise = result.noise.line(result.metric) if result.noise is not None else ""
    if noise:
        console.print(noise)
    if result.best_config is not None:
        console.print(
            f"best: trial {result.best_trial}, {result.metric} {_fmt(result.best_value)} → "
            f"{result.best_config}  (run it: genlab train {result.best_config})"
        )
    else:
        console.print("[red]no trial completed[/]; see trials.csv for the failure reasons")
    if result.skipped_plots:
        console.print("plots skipped: " + "; ".join(result.skipped_plots))
    console.print(f"study dir: {result.study_dir}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return str(v)
